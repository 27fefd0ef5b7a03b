package nemesis

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
)

// SeedEnv names the variable that replays one seed: RBEE_FAULT_SEED=N runs
// exactly seed N's schedule (and its load's mix of jobs).
const SeedEnv = "RBEE_FAULT_SEED"

// Seeds returns the seeds to run: the one in RBEE_FAULT_SEED when it is
// set (a replay), else n fresh ones, drawn at random so that every run
// explores new schedules; each is printed with its schedule, so a failure
// can be replayed.
func Seeds(n int) ([]uint64, error) {
	if v := strings.TrimSpace(os.Getenv(SeedEnv)); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: want a non-negative integer seed", SeedEnv, v)
		}
		return []uint64{s}, nil
	}
	if n < 1 {
		return nil, fmt.Errorf("nemesis: %d seeds: want at least 1", n)
	}
	out := make([]uint64, n)
	for i := range out {
		// Short seeds are easier to type back in.
		out[i] = rand.Uint64N(1_000_000)
	}
	return out, nil
}
