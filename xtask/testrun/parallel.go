package testrun

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ParallelEnv names the environment variable that sets how many Docker test
// packages run at once (go test -p). Each package's tests bring up their
// own isolated stacks (project name, subnet, ephemeral ports, labels), so
// packages can share the engine; the default is what the 2-core development
// machine and its dockerd sustained best when measured (docs/BENCHMARKS.md).
const ParallelEnv = "RBEE_DOCKER_PARALLEL"

// DefaultParallel is the number of Docker packages run at once when
// RBEE_DOCKER_PARALLEL is unset.
const DefaultParallel = 2

// maxParallel bounds the setting: beyond it the engine, not the tests, is
// measured, and every suite's timeouts are stretched for nothing.
const maxParallel = 8

// DockerParallel returns the number of Docker packages to run at once, from
// RBEE_DOCKER_PARALLEL (1…8) or DefaultParallel.
func DockerParallel() (int, error) {
	s := strings.TrimSpace(os.Getenv(ParallelEnv))
	if s == "" {
		return DefaultParallel, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxParallel {
		return 0, fmt.Errorf("%s=%q: want a whole number from 1 to %d (Docker packages run at once)", ParallelEnv, s, maxParallel)
	}
	return n, nil
}
