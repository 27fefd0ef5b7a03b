//go:build docker

package failure

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/nemesis"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// Random fault schedules under job traffic on two hives (xtask/nemesis):
// for each seed, a fresh stack; partitions, isolation, packet loss,
// pauses, kills and restarts of hives at drawn times while four clients
// run inference and hive jobs through the queen; then everything healed,
// both hives and their workers healthy again, one inference served on each
// hive, and the History holds no violation (every job exactly one
// terminator, status agreeing, nothing lost). Two fresh seeds of 30 s per
// run by default (RBEE_NEMESIS_SEEDS, RBEE_NEMESIS_DURATION);
// RBEE_FAULT_SEED=N replays seed N exactly.
func TestNemesis(t *testing.T) {
	t.Parallel()
	n, d := 2, 30*time.Second
	if v := os.Getenv("RBEE_NEMESIS_SEEDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("RBEE_NEMESIS_SEEDS=%q: want a positive count", v)
		}
	}
	if v := os.Getenv("RBEE_NEMESIS_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("RBEE_NEMESIS_DURATION=%q: %v", v, err)
		}
	}
	seeds, err := nemesis.Seeds(n)
	if err != nil {
		t.Fatal(err)
	}
	stale, err := nemesis.StaleAfter(suite.RepoRoot(t), integration.MultiHive)
	if err != nil {
		t.Fatal(err)
	}
	var results []nemesis.Result
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed_%d", seed), func(t *testing.T) {
			h := integration.Start(t, integration.MultiHive, nemesis.StackOptions()...)
			ctx := suite.Context(t, d+15*time.Minute)
			cfg := nemesis.Config{Seed: seed, Duration: d, Beat: nemesis.Beat, StaleAfter: stale, Logf: t.Logf}
			sys, err := nemesis.Prepare(ctx, h, cfg)
			if err != nil {
				t.Fatal(err)
			}
			res, err := nemesis.Run(ctx, sys)
			results = append(results, res)
			if err != nil {
				t.Fatalf("%v\n%s", err, res.Report())
			}
			if len(res.Violations) > 0 {
				t.Fatalf("%d History violations\n%s", len(res.Violations), res.Report())
			}
			// Negative control against the same queen: a job it never had,
			// recorded as acknowledged, is reported lost.
			var bogus checks.History
			_, _ = bogus.Adopt(ctx, sys.Q, "infer", "job-00000000-0000-4000-8000-000000000000", nil)
			if vs := nemesis.Check(ctx, sys.Q, &bogus, []nemesis.Job{{Op: "infer", JobID: "job-00000000-0000-4000-8000-000000000000"}}, res.Schedule); len(vs) != 1 {
				t.Fatalf("a job the queen never had: %d violations %v; want it reported lost", len(vs), vs)
			}
			if res.Done() == 0 {
				t.Fatalf("no job of the load ended [DONE]: the load did not run\n%s", res.Report())
			}
			t.Logf("seed %d: %d faults (%s), %d jobs done, %d not done, no violation", seed, len(res.Schedule.Events), res.Schedule.Kinds(), res.Done(), res.Failed())
		})
	}
	t.Logf("nemesis:\n%s", nemesis.Table(results))
}
