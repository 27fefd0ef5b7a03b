//go:build docker

package workerlifecycle

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// Workers live on the hive that spawned them: with one worker spawned on
// each of two hives, each process runs on its own machine (and not on the
// other), each hive lists only its own, and worker_process_delete on hive-2
// ends exactly hive-2's worker: its process is gone and the queen drops it,
// while hive-1's worker still runs and stays fresh.
func TestWorkersOnTwoHives(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.MultiHive)
	ctx := suite.Context(t, 3*time.Minute)
	q := h.MustQueen(t)
	var hist checks.History
	ws := map[string]api.WorkerProcess{}
	for _, hv := range []string{"hive-2", "hive-1"} {
		if err := checks.AwaitHiveState(ctx, q, hv, api.HiveOnline, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		suite.SeedModel(t, h, q, hv, suite.TinyModel)
		ws[hv] = suite.SpawnWorker(t, q, &hist, hv, suite.TinyModel)
	}
	other := map[string]string{"hive-1": "hive-2", "hive-2": "hive-1"}
	for hv, w := range ws {
		if cmd := procCmdline(t, h, hv, w.PID); !strings.Contains(cmd, w.WorkerID) {
			t.Errorf("pid %d on %s is %q; want worker %s", w.PID, hv, cmd, w.WorkerID)
		}
		if cmd := procCmdline(t, h, other[hv], w.PID); strings.Contains(cmd, w.WorkerID) {
			t.Errorf("worker %s of %s runs on %s too", w.WorkerID, hv, other[hv])
		}
		l := suite.Result[api.WorkerList](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpWorkerProcessList, HiveID: hv}).Workers
		if len(l) != 1 || !containsWorker(l, w.WorkerID, w.PID) {
			t.Errorf("worker_process_list on %s: %+v; want only %s (pid %d) running", hv, l, w.WorkerID, w.PID)
		}
	}

	victim, kept := ws["hive-2"], ws["hive-1"]
	del := suite.Result[api.WorkerProcess](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpWorkerProcessDelete, HiveID: "hive-2", WorkerID: victim.WorkerID})
	if del.WorkerID != victim.WorkerID || del.State != "exited" {
		t.Fatalf("worker_process_delete on hive-2 result %+v; want %s exited", del, victim.WorkerID)
	}
	if alive(t, h, "hive-2", victim.PID) {
		t.Fatalf("deleted worker %s (pid %d) still runs on hive-2", victim.WorkerID, victim.PID)
	}
	if _, ok, err := checks.Worker(ctx, q, victim.WorkerID); err != nil || ok {
		t.Fatalf("deleted worker %s in GET /v1/workers: %v, %v; want gone at once", victim.WorkerID, ok, err)
	}
	if !alive(t, h, "hive-1", kept.PID) {
		t.Fatalf("hive-1's worker %s (pid %d) stopped when hive-2's was deleted", kept.WorkerID, kept.PID)
	}
	// Still fresh after more than stale_after (3 s): it kept heartbeating.
	since := time.Now()
	if err := checks.Await(ctx, 30*time.Second, "hive-1's worker heartbeating after the delete", func(ctx context.Context) (bool, string, error) {
		w, ok, err := checks.Worker(ctx, q, kept.WorkerID)
		if err != nil || !ok {
			return false, "not registered", err
		}
		return !w.Stale && w.LastSeen.After(since.Add(3*time.Second)), "last_seen " + w.LastSeen.Format(time.RFC3339Nano), nil
	}); err != nil {
		t.Fatal(err)
	}
	l := suite.Result[api.WorkerList](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpWorkerProcessList, HiveID: "hive-1"}).Workers
	if len(l) != 1 || !containsWorker(l, kept.WorkerID, kept.PID) {
		t.Errorf("worker_process_list on hive-1 after deleting hive-2's worker: %+v; want %s running", l, kept.WorkerID)
	}
	suite.NothingLost(t, time.Minute, q, &hist)
}
