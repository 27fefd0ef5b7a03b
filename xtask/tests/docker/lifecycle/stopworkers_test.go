//go:build docker

package lifecycle

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// hive_stop stops the workers that hive started, not only the daemon
// (docs/PROTOCOL.md: POST /v1/shutdown "stops every worker it started"):
// the worker's process is gone from the hive machine, its port refuses the
// queen, and an infer of its model finds no worker. A process of the same
// name that the hive did not start survives. Negative control: before the
// stop the worker runs, answers the queen and serves an infer.
func TestHiveStopStopsItsWorkers(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.Localhost)
	q := h.MustQueen(t)
	ctx := suite.Context(t, 4*opTimeout)
	if err := checks.AwaitHiveState(ctx, q, hive, api.HiveOnline, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	const model = "rbee/tiny-ngram:model.bin"
	suite.SeedModel(t, h, q, hive, model)
	var hist checks.History
	w := suite.SpawnWorker(t, q, &hist, hive, model)
	// A process named like a worker that the hive did not start.
	decoy, err := strconv.Atoi(strings.TrimSpace(suite.Sh(t, h, hive, `nohup bash -c 'exec -a llm-worker-rbee sleep 602' >/dev/null 2>&1 </dev/null & echo $!`, integration.AsUser("rbee"))))
	if err != nil {
		t.Fatal(err)
	}
	if err := checks.Await(ctx, 10*time.Second, "the decoy running", func(ctx context.Context) (bool, string, error) {
		s, err := procState(ctx, h, decoy)
		return running(s, "llm-worker-rbee"), s, err
	}); err != nil {
		t.Fatal(err)
	}
	workerHealth := func() int {
		t.Helper()
		return h.MustExec(t, "queen", []string{"curl", "-fsS", "-o", "/dev/null", "-m", "3", w.URL + "/health"}).ExitCode
	}

	// Negative control: the worker runs, answers and serves.
	if s, err := procState(ctx, h, w.PID); err != nil || !running(s, "llm-worker-rbee") {
		t.Fatalf("worker %s (pid %d) before hive_stop: %q, %v; want running llm-worker-rbee", w.WorkerID, w.PID, s, err)
	}
	if code := workerHealth(); code != 0 {
		t.Fatalf("worker %s /health from the queen before hive_stop: curl exit %d; want 0", w.WorkerID, code)
	}
	suite.Infer(t, q, &hist, api.JobRequest{Model: model})

	res := suite.Result[api.HiveStopResult](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStop, Alias: hive})
	if res.State != api.HiveOffline {
		t.Fatalf("hive_stop result %+v; want offline", res)
	}
	// The hive's shutdown waits for its workers (SIGTERM, SIGKILL after
	// its stop grace); allow the queen's stop_timeout on top of that.
	err = checks.Await(ctx, 30*time.Second, fmt.Sprintf("worker %s (pid %d) gone", w.WorkerID, w.PID), func(ctx context.Context) (bool, string, error) {
		s, err := procState(ctx, h, w.PID)
		return !running(s, "llm-worker-rbee"), fmt.Sprintf("pid %d: %s", w.PID, s), err
	})
	if err != nil {
		t.Fatalf("after hive_stop: %v", err)
	}
	if s, err := procState(ctx, h, decoy); err != nil || !running(s, "llm-worker-rbee") {
		t.Errorf("decoy llm-worker-rbee (pid %d, not started by the hive) after hive_stop: %q, %v; want still running", decoy, s, err)
	}
	if code := workerHealth(); code != 7 {
		t.Errorf("worker %s /health from the queen after hive_stop: curl exit %d; want 7 (connection refused)", w.WorkerID, code)
	}
	suite.MustError(t, suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpInfer, Model: model, Prompt: "Alice", MaxTokens: 8}), "no ready worker for model "+model)
	suite.NothingLost(t, opTimeout, q, &hist)
}
