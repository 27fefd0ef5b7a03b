//go:build docker

package failure

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// A worker stopped out of band with SIGTERM announces it (one heartbeat
// with state stopping, then it exits) and is never scheduled again, even
// though it stays fresh in the registry until stale_after: the next infer
// for its model ends [ERROR] no ready worker without any attempt on it.
// The same infer on that worker before the stop is the negative control.
func TestStoppingWorkerNotScheduled(t *testing.T) {
	t.Parallel()
	// stale_after of a minute keeps the stopped worker fresh (last_seen is
	// its stopping heartbeat) for far longer than the few seconds the infer
	// below takes: only its state can keep it from being scheduled.
	const staleAfter = time.Minute
	h, q := suite.StartHive(t, integration.WithFile("queen", "/etc/rbee/queen.toml",
		suite.QueenConfig(t, "full-stack", map[string]string{"heartbeat.stale_after": strconv.Quote(staleAfter.String())})))
	var hist checks.History

	suite.Download(t, q, &hist, hive, suite.TinyModel)
	w := suite.Spawn(t, q, &hist, hive, suite.TinyModel, "cpu:0")
	awaitWorker(t, q, w.WorkerID, "registered ready", func(wi api.WorkerInfo) bool {
		return !wi.Stale && wi.State == api.WorkerReady
	})

	// Negative control: before the stop, the same infer runs on w.
	out := suite.Run(t, opTimeout, q, &hist, inferReq(suite.TinyModel))
	if got := suite.RoutedWorkers(t, out); len(got) != 1 || got[0] != w.WorkerID {
		t.Fatalf("infer before the stop was routed to %v; want [%s]", got, w.WorkerID)
	}
	// suite.Run returns when the queen's stream ended; the worker turns
	// ready again with its next heartbeat, so the stop below meets an idle
	// worker (a busy one would end its generation first, still stopping).
	awaitWorker(t, q, w.WorkerID, "ready after the control infer", func(wi api.WorkerInfo) bool {
		return !wi.Stale && wi.State == api.WorkerReady
	})

	// The stop, out of band: SIGTERM to the worker's process on the hive.
	if r := h.MustExec(t, hive, []string{"kill", "-TERM", strconv.Itoa(w.PID)}); r.ExitCode != 0 {
		t.Fatalf("kill -TERM %d in %s: exit %d %s", w.PID, hive, r.ExitCode, r.Stderr)
	}
	stopped := time.Now()
	// At the receiver: the queen has the stopping heartbeat, and the worker
	// is still fresh (so freshness alone would schedule it).
	awaitWorker(t, q, w.WorkerID, "stopping and fresh at the queen", func(wi api.WorkerInfo) bool {
		return !wi.Stale && wi.State == api.WorkerStopping
	})
	// And the process is really gone: the hive's own table says exited, so
	// an attempt on it could only be refused.
	if err := checks.Await(t.Context(), stateTimeout, "worker "+w.WorkerID+" exited on "+hive, func(ctx context.Context) (bool, string, error) {
		got := suite.Result[api.WorkerProcess](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpWorkerProcessGet, HiveID: hive, WorkerID: w.WorkerID})
		return got.State == "exited", fmt.Sprintf("%s is %s", w.WorkerID, got.State), nil
	}); err != nil {
		t.Fatal(err)
	}

	out = suite.Try(t, opTimeout, q, &hist, inferReq(suite.TinyModel))
	// No attempt on the stopping worker: the queen narrates every worker it
	// routes to (PROTOCOL.md, departure 11), and there must be none.
	if got := suite.RoutedWorkers(t, out); len(got) != 0 {
		t.Fatalf("infer after %s announced stopping was routed to %v; want no worker (%s)", w.WorkerID, got, out.Terminator())
	}
	want := "no ready worker for model " + suite.TinyModel
	if out.Kind != sse.Error || out.Error != want {
		t.Fatalf("infer after %s announced stopping ended %s; want %s %s", w.WorkerID, out.Terminator(), api.TermError, want)
	}
	// The window held: the worker was still fresh, and still stopping,
	// after the infer was refused.
	wi, ok, err := checks.Worker(t.Context(), q, w.WorkerID)
	if err != nil {
		t.Fatal(err)
	}
	if !ok || wi.Stale || wi.State != api.WorkerStopping {
		t.Fatalf("after the refused infer, worker %s at the queen: registered %v, state %s, stale %v; want fresh and stopping (stale_after %s, %s since the stop)",
			w.WorkerID, ok, wi.State, wi.Stale, staleAfter, time.Since(stopped).Round(time.Millisecond))
	}
	t.Logf("worker %s: stopping and fresh at the queen; infer refused %s after the SIGTERM: %s", w.WorkerID, time.Since(stopped).Round(time.Millisecond), out.Terminator())
	suite.NothingLost(t, 60*time.Second, q, &hist)
}
