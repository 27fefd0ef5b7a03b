//go:build docker

package heartbeat

import (
	"context"
	"encoding/json"
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
	margin    = 3 * time.Second
	tinyModel = "rbee/tiny-ngram:model.bin" // served by the full stack's hub
)

// withInterval pins the heartbeat interval the timing bounds are based on.
var withInterval = integration.WithEnv(map[string]string{"RBEE_HEARTBEAT_INTERVAL": interval.String()})

// spawnWorker downloads tinyModel onto hive (through the queen, from the
// hub) and spawns a worker for it on cpu:0; it returns the hive's result.
func spawnWorker(ctx context.Context, t *testing.T, q *client.Client, hive string) api.WorkerProcess {
	t.Helper()
	if _, err := checks.MustSucceed(q.Run(ctx, api.JobRequest{Operation: api.OpModelDownload, HiveID: hive, Model: tinyModel}, nil)); err != nil {
		t.Fatalf("model_download on %s: %v", hive, err)
	}
	out, err := checks.MustSucceed(q.Run(ctx, api.JobRequest{Operation: api.OpWorkerSpawn, HiveID: hive, Model: tinyModel, Device: "cpu:0"}, nil))
	if err != nil {
		t.Fatalf("worker_spawn on %s: %v", hive, err)
	}
	w, err := checks.Result[api.WorkerProcess](out)
	if err != nil {
		t.Fatal(err)
	}
	if w.WorkerID == "" || w.PID <= 0 {
		t.Fatalf("worker_spawn on %s returned %+v", hive, w)
	}
	return w
}

// hivePIDs maps worker id → pid from hive's own process table
// (worker_process_list through the queen), for running workers.
func hivePIDs(ctx context.Context, t *testing.T, q *client.Client, hive string) map[string]int {
	t.Helper()
	out, err := checks.MustSucceed(q.Run(ctx, api.JobRequest{Operation: api.OpWorkerProcessList, HiveID: hive}, nil))
	if err != nil {
		t.Fatalf("worker_process_list on %s: %v", hive, err)
	}
	l, err := checks.Result[api.WorkerList](out)
	if err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{}
	for _, w := range l.Workers {
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

// routedTo lists the worker ids the queen's narration says an infer was routed to.
func routedTo(t *testing.T, o client.Outcome) []string {
	t.Helper()
	var ids []string
	for _, ev := range o.Events {
		var n api.Narration
		if ev.Name != api.EventNarration || json.Unmarshal([]byte(ev.Data), &n) != nil {
			continue
		}
		// "routing inference for M to worker W on H (N in flight)"
		if rest, ok := strings.CutPrefix(n.Message, "routing inference for "); ok {
			if _, after, ok := strings.Cut(rest, " to worker "); ok {
				ids = append(ids, strings.Fields(after)[0])
			}
		}
	}
	return ids
}
