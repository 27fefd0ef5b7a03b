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

// TestParallelEnv names the environment variable that sets how many tests
// of one Docker package run at once (go test -parallel). The suites' tests
// mark themselves t.Parallel: each brings up its own isolated stack, and
// most of a test's time is spent waiting on the intervals it configured
// (heartbeats, staleness, idle and start timeouts), not on the cores. The
// engine holds at most RBEE_DOCKER_PARALLEL × RBEE_DOCKER_TEST_PARALLEL
// stacks at once.
const TestParallelEnv = "RBEE_DOCKER_TEST_PARALLEL"

// DefaultTestParallel is the number of tests per Docker package run at once
// when RBEE_DOCKER_TEST_PARALLEL is unset. On the 2-core development
// machine 3 ran httpcomm 2.5× faster than 1 and passed a full stressed
// soak; 6 was faster still but was not soaked (docs/BENCHMARKS.md). It is
// set explicitly rather than left to go test, whose default (GOMAXPROCS)
// counts the test process's cores, not what the engine sustains.
const DefaultTestParallel = 3

// maxTestParallel bounds RBEE_DOCKER_TEST_PARALLEL for the same reason as
// maxParallel.
const maxTestParallel = 8

// DockerParallel returns the number of Docker packages to run at once, from
// RBEE_DOCKER_PARALLEL (1…8) or DefaultParallel.
func DockerParallel() (int, error) {
	return intSetting(ParallelEnv, DefaultParallel, maxParallel, "Docker packages run at once")
}

// intSetting reads env as a whole number from 1 to max, def when unset.
func intSetting(env string, def, max int, what string) (int, error) {
	s := strings.TrimSpace(os.Getenv(env))
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		return 0, fmt.Errorf("%s=%q: want a whole number from 1 to %d (%s)", env, s, max, what)
	}
	return n, nil
}

// DockerTestParallel returns the number of tests of one Docker package to
// run at once, from RBEE_DOCKER_TEST_PARALLEL (1…8) or DefaultTestParallel.
func DockerTestParallel() (int, error) {
	return intSetting(TestParallelEnv, DefaultTestParallel, maxTestParallel, "tests of one Docker package run at once")
}
