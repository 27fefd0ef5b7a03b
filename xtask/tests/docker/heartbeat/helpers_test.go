//go:build docker

package heartbeat

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

const (
	// interval is the hives' and workers' heartbeat interval for every test
	// (RBEE_HEARTBEAT_INTERVAL); staleAfter is [heartbeat] stale_after in
	// configs/full-stack/queen.toml.
	interval   = 500 * time.Millisecond
	staleAfter = 3 * time.Second
	// margin is added to every timing bound the issue states: the machine
	// has two cores shared with other suites, and polling adds up to
	// checks.PollInterval. Measured times are logged.
	margin = 3 * time.Second
)

// withInterval pins the heartbeat interval the timing bounds are based on.
var withInterval = integration.WithEnv(map[string]string{"RBEE_HEARTBEAT_INTERVAL": interval.String()})

// spawnWorker downloads suite.TinyModel onto hive (through the queen, from
// the hub) and spawns a worker for it on cpu:0, both through hist; it
// returns the hive's result.
func spawnWorker(t *testing.T, q *client.Client, hist *checks.History, hive string) api.WorkerProcess {
	t.Helper()
	suite.Download(t, q, hist, hive, suite.TinyModel)
	w := suite.Spawn(t, q, hist, hive, suite.TinyModel, "cpu:0")
	if w.WorkerID == "" || w.PID <= 0 {
		t.Fatalf("worker_spawn on %s returned %+v", hive, w)
	}
	return w
}

// hivePIDs maps worker id → pid from hive's own process table
// (worker_process_list through the queen, recorded in hist), for running
// workers.
func hivePIDs(t *testing.T, q *client.Client, hist *checks.History, hive string) map[string]int {
	t.Helper()
	pids := map[string]int{}
	for _, w := range suite.ProcessList(t, q, hist, hive) {
		if w.State == "running" {
			pids[w.WorkerID] = w.PID
		}
	}
	return pids
}

// containerWorkerPID is the pid of llm-worker-rbee in a standalone worker container.
func containerWorkerPID(t *testing.T, h *integration.Harness, svc string) int {
	t.Helper()
	r := h.MustExec(t, svc, []string{"pgrep", "-x", "llm-worker-rbee"})
	pid, err := strconv.Atoi(strings.TrimSpace(r.Stdout))
	if r.ExitCode != 0 || err != nil {
		t.Fatalf("pgrep llm-worker-rbee in %s: exit %d, %q", svc, r.ExitCode, r.Stdout)
	}
	return pid
}

// awaitAllFresh waits until every worker in ids is registered and fresh
// and every hive in hives is online.
func awaitAllFresh(ctx context.Context, q *client.Client, ids, hives []string, timeout time.Duration) error {
	return checks.Await(ctx, timeout, fmt.Sprintf("workers %v fresh and hives %v online", ids, hives), func(ctx context.Context) (bool, string, error) {
		ws, err := q.Workers(ctx)
		if err != nil {
			return false, "", err
		}
		hs, err := q.Hives(ctx)
		if err != nil {
			return false, "", err
		}
		var missing []string
		for _, id := range ids {
			if i := slices.IndexFunc(ws, func(w api.WorkerInfo) bool { return w.WorkerID == id && !w.Stale }); i < 0 {
				missing = append(missing, "worker "+id)
			}
		}
		for _, a := range hives {
			if i := slices.IndexFunc(hs, func(h api.HiveInfo) bool { return h.Alias == a && h.State == api.HiveOnline }); i < 0 {
				missing = append(missing, "hive "+a)
			}
		}
		return len(missing) == 0, "not yet back: " + strings.Join(missing, ", "), nil
	})
}
