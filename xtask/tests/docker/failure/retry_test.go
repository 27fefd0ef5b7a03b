//go:build docker

package failure

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
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

const hiveLogFile = "/home/rbee/.local/state/rbee/rbee-hive.log"

// spawnCounts is how many worker spawns the hive has seen, three ways: the
// jobs its log says it started, the workers its own API lists, and the
// worker processes running in its container.
type spawnCounts struct {
	started, listed, running, processes int
}

func (c spawnCounts) String() string {
	return fmt.Sprintf("%d worker_spawn jobs started, %d workers listed (%d running), %d llm-worker-rbee processes", c.started, c.listed, c.running, c.processes)
}

func countSpawns(ctx context.Context, h *integration.Harness, hc *client.Client) (spawnCounts, error) {
	var c spawnCounts
	r, err := h.Exec(ctx, "hive-1", []string{"sh", "-c", "grep -c ': " + api.OpWorkerSpawn + " started' " + hiveLogFile + "; pgrep -c -x llm-worker-rbee"})
	if err != nil {
		return c, err
	}
	f := strings.Fields(r.Stdout)
	if len(f) != 2 {
		return c, fmt.Errorf("counting in hive-1: %q", r.Stdout)
	}
	c.started, _ = strconv.Atoi(f[0])
	c.processes, _ = strconv.Atoi(f[1])
	// Raw access: a job on the hive itself, which the queen's History
	// cannot re-read.
	out, err := hc.Run(ctx, api.JobRequest{Operation: api.OpWorkerProcessList}, nil)
	if err != nil {
		return c, err
	}
	if out.Kind != sse.Done {
		return c, fmt.Errorf("hive worker_process_list ended %s", out.Terminator())
	}
	wl, err := checks.Result[api.WorkerList](out)
	if err != nil {
		return c, err
	}
	c.listed = len(wl.Workers)
	for _, w := range wl.Workers {
		if w.State == "running" {
			c.running++
		}
	}
	return c, nil
}

// awaitSpawns waits until the hive has n spawns finished (n running
// workers) and returns the counts then.
func awaitSpawns(t *testing.T, h *integration.Harness, hc *client.Client, n int) spawnCounts {
	t.Helper()
	var c spawnCounts
	err := checks.Await(t.Context(), stateTimeout+opTimeout, fmt.Sprintf("%d running workers on hive-1", n), func(ctx context.Context) (bool, string, error) {
		var err error
		c, err = countSpawns(ctx, h, hc)
		return err == nil && c.running >= n, c.String(), err
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A worker_spawn POST that reached the hive on a reused keep-alive
// connection, which then broke before the hive's answer came back, is not
// sent again: the hive starts exactly one spawn and runs exactly one
// worker, and the queen's job ends [ERROR] saying the hive may have
// accepted it (what really happened), not that the hive was unreachable.
// Negative control: the next spawn is counted, so the counts are live.
func TestPOSTNotRetriedAfterDelivery(t *testing.T) {
	t.Parallel()
	// The queen's [http] timeout must outlast holding the hive's answer
	// and cutting the connection, whatever the load: a minute.
	toml := suite.QueenConfig(t, "full-stack", map[string]string{"http.timeout": `"60s"`})
	h, q := suite.StartHive(t, integration.WithFile("queen", "/etc/rbee/queen.toml", toml))
	var hist checks.History
	hc, err := h.Hive(hive)
	if err != nil {
		t.Fatal(err)
	}
	suite.Download(t, q, &hist, hive, suite.TinyModel)
	if c, err := countSpawns(t.Context(), h, hc); err != nil || c != (spawnCounts{}) {
		t.Fatalf("before any spawn: %v, %v; want nothing", c, err)
	}

	// A forwarded job leaves the queen an idle keep-alive connection to
	// the hive; the spawn's POST must go on it.
	suite.ProcessList(t, q, &hist, hive)
	idle := integration.Locals(h.MustConnections(t, "queen", "hive-1", hivePort))
	if len(idle) == 0 {
		t.Fatal("no idle queen→hive-1 connection after a forwarded job: nothing to reuse")
	}

	// The hive's answers to POST /v1/jobs carry "sse_url": held, the hive
	// accepts the job but the queen never hears so.
	ctx := suite.Context(t, 4*time.Minute)
	release, err := h.HoldReplies(ctx, "hive-1", hivePort, "sse_url")
	if err != nil {
		t.Fatal(err)
	}
	acc, done := suite.Submit(ctx, t, q, &hist, api.JobRequest{Operation: api.OpWorkerSpawn, HiveID: hive, Model: suite.TinyModel, Device: "cpu:0"}, nil)
	err = checks.Await(ctx, stateTimeout, "hive-1 started the spawn", func(ctx context.Context) (bool, string, error) {
		r, err := h.Exec(ctx, "hive-1", []string{"grep", "-c", ": " + api.OpWorkerSpawn + " started", hiveLogFile})
		if err != nil {
			return false, "", err
		}
		n := strings.TrimSpace(r.Stdout)
		return n == "1", n + " spawns in the hive log", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	now := integration.Locals(h.MustConnections(t, "queen", "hive-1", hivePort))
	for _, l := range now {
		if !slices.Contains(idle, l) {
			t.Fatalf("the queen opened %s for the POST; want it on the reused connection (idle before: %v)", l, idle)
		}
	}
	h.MustCutConnections(t, "queen", "hive-1", hivePort)
	if err := release(ctx); err != nil {
		t.Fatal(err)
	}

	var r suite.Followed
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("the spawn's stream did not end after its connection was cut")
	}
	if r.Err != nil {
		t.Fatalf("following the spawn: %v", r.Err)
	}
	suite.MustError(t, r.Out, "hive-1", "may have been accepted")
	if strings.Contains(r.Out.Error, "connection refused") {
		t.Errorf("error %q says the hive never got the request", r.Out.Error)
	}
	for _, n := range suite.Narrations(t, r.Out) {
		if strings.Contains(n.Message, "retrying POST") {
			t.Errorf("the POST was retried: %s", n.Message)
		}
	}
	// The queen's job is over, so no retry can still come: count.
	c := awaitSpawns(t, h, hc, 1)
	if c != (spawnCounts{started: 1, listed: 1, running: 1, processes: 1}) {
		t.Fatalf("after one spawn whose answer was lost: %v; want exactly one of each", c)
	}
	t.Logf("spawn %s ended %s; hive: %v", acc.JobID, r.Out.Terminator(), c)

	// Negative control: a spawn that works is counted.
	suite.Spawn(t, q, &hist, hive, suite.TinyModel, "cpu:0")
	if c := awaitSpawns(t, h, hc, 2); c != (spawnCounts{started: 2, listed: 2, running: 2, processes: 2}) {
		t.Fatalf("after a second, normal spawn: %v; want exactly two of each", c)
	}
}
