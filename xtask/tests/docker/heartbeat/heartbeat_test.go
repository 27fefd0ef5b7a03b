//go:build docker

package heartbeat

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// 1. A spawned worker appears in GET /v1/workers within one interval, with its hive, model, device and a URL the queen can reach.
func TestRegistration(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.FullStack, integration.WithServices("queen", "hive-1", "hub"), withInterval)
	ctx := suite.Context(t, 2*time.Minute)
	q := h.MustQueen(t)
	var hist checks.History

	w := spawnWorker(t, q, &hist, "hive-1")
	t0 := time.Now()
	row, err := checks.AwaitWorker(ctx, q, w.WorkerID, interval+arrivalSlack, "registered", checks.Fresh)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("worker %s registered %v after worker_spawn returned", w.WorkerID, time.Since(t0).Round(time.Millisecond))
	if row.HiveID != "hive-1" || row.Model != suite.TinyModel || row.Device != "cpu:0" || row.URL != w.URL || row.State != api.WorkerReady {
		t.Fatalf("registry row %+v; want hive hive-1, model %s, device cpu:0, url %s, state ready", row, suite.TinyModel, w.URL)
	}
	// Advertised, not loopback: the queen must reach it over the network.
	if u, err := url.Parse(row.URL); err != nil || u.Hostname() == "localhost" || strings.HasPrefix(u.Hostname(), "127.") {
		t.Fatalf("worker URL %q is not an advertised address", row.URL)
	}
	r := h.MustExec(t, "queen", []string{"curl", "-fsS", "-m", "3", row.URL + "/health"})
	var health api.WorkerHealth
	if r.ExitCode != 0 || json.Unmarshal([]byte(r.Stdout), &health) != nil || health.WorkerID != w.WorkerID {
		t.Fatalf("from the queen, GET %s/health: exit %d, %q %s", row.URL, r.ExitCode, r.Stdout, r.Stderr)
	}
	suite.NothingLost(t, time.Minute, q, &hist)
}

// 2. A worker's and a hive's last_seen advance over at least three intervals and never go backwards.
func TestUpdates(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.FullStack, integration.WithServices("queen", "hive-1", "worker-1"), withInterval)
	ctx := suite.Context(t, 2*time.Minute)
	q := h.MustQueen(t)
	if err := awaitAllFresh(ctx, q, []string{"worker-1"}, []string{"hive-1"}, 20*time.Second); err != nil {
		t.Fatal(err)
	}

	var worker, hive []time.Time // distinct last_seen values, in the order seen
	var backwards []string
	note := func(seq *[]time.Time, who string, ts time.Time) {
		s := *seq
		switch {
		case len(s) == 0 || ts.After(s[len(s)-1]):
			*seq = append(s, ts)
		case ts.Before(s[len(s)-1]):
			backwards = append(backwards, fmt.Sprintf("%s last_seen %s after %s", who, ts.Format(time.RFC3339Nano), s[len(s)-1].Format(time.RFC3339Nano)))
		}
	}
	t0 := time.Now()
	err := checks.Await(ctx, 10*interval+margin, "last_seen advancing 3 times", func(ctx context.Context) (bool, string, error) {
		w, ok, err := checks.Worker(ctx, q, "worker-1")
		if err != nil || !ok {
			return false, "worker-1 not registered", err
		}
		hv, err := checks.Hive(ctx, q, "hive-1")
		if err != nil {
			return false, "", err
		}
		if hv.LastSeen == nil {
			return false, "hive-1 has no last_seen", nil
		}
		note(&worker, "worker-1", w.LastSeen)
		note(&hive, "hive-1", *hv.LastSeen)
		if len(backwards) > 0 {
			return true, "", nil // fail below, with what was seen
		}
		// Four distinct values are three advances; watch at least three intervals.
		done := len(worker) >= 4 && len(hive) >= 4 && time.Since(t0) >= 3*interval
		return done, fmt.Sprintf("worker-1 advanced %d times, hive-1 %d times", len(worker)-1, len(hive)-1), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(backwards) > 0 {
		t.Fatalf("last_seen went backwards: %s", strings.Join(backwards, "; "))
	}
	t.Logf("over %v: worker-1 last_seen advanced %d times, hive-1 %d times", time.Since(t0).Round(time.Millisecond), len(worker)-1, len(hive)-1)

	// Negative control: it is worker-1's heartbeats that move its
	// last_seen. With them cut, it freezes while hive-1's keeps advancing.
	h.MustInject(t, integration.Block("worker-1", "queen"))
	frozen, ok, err := checks.Worker(ctx, q, "worker-1")
	if err != nil || !ok {
		t.Fatalf("worker-1 after the cut: registered %v, %v", ok, err)
	}
	hiveBefore, err := checks.Hive(ctx, q, "hive-1")
	if err != nil || hiveBefore.LastSeen == nil {
		t.Fatalf("hive-1 after the cut: %+v, %v", hiveBefore, err)
	}
	// Watch for several intervals (a state that must hold over a window).
	for watchEnd := time.Now().Add(6 * interval); time.Now().Before(watchEnd); time.Sleep(checks.PollInterval) {
		w, _, err := checks.Worker(ctx, q, "worker-1")
		if err != nil {
			t.Fatal(err)
		}
		if !w.LastSeen.Equal(frozen.LastSeen) {
			t.Fatalf("worker-1 last_seen moved from %s to %s while its heartbeats were cut", frozen.LastSeen.Format(time.RFC3339Nano), w.LastSeen.Format(time.RFC3339Nano))
		}
	}
	if hv, err := checks.Hive(ctx, q, "hive-1"); err != nil || hv.LastSeen == nil || !hv.LastSeen.After(*hiveBefore.LastSeen) {
		t.Fatalf("hive-1 last_seen did not advance while only worker-1 was cut: %+v, %v", hv, err)
	}

	// Restored: last_seen advances again, first within one interval plus
	// the sender's blocked-POST timeout (at most one interval) and slack,
	// then at about one interval: the mean gap over several heartbeats lies
	// between half an interval and an interval plus slack spread over them.
	h.MustRecoverAll(t)
	healed := time.Now()
	var again []time.Time
	const gaps = 6
	err = checks.Await(ctx, 2*interval+arrivalSlack+gaps*(interval+margin), "worker-1 heartbeats again", func(ctx context.Context) (bool, string, error) {
		w, ok, err := checks.Worker(ctx, q, "worker-1")
		if err != nil || !ok {
			return false, "worker-1 not registered", err
		}
		if w.LastSeen.After(frozen.LastSeen) && (len(again) == 0 || w.LastSeen.After(again[len(again)-1])) {
			again = append(again, w.LastSeen)
		}
		return len(again) > gaps, fmt.Sprintf("%d new last_seen values", len(again)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if first := again[0].Sub(healed); first > 2*interval+arrivalSlack {
		t.Errorf("first heartbeat after the heal arrived %v after it; want within %v", first, 2*interval+arrivalSlack)
	}
	mean := again[gaps].Sub(again[0]) / gaps
	t.Logf("after the heal: first heartbeat %v later, then a mean gap of %v over %d heartbeats (interval %v)", again[0].Sub(healed).Round(time.Millisecond), mean.Round(time.Millisecond), gaps, interval)
	if mean < interval/2 || mean > interval+margin/gaps {
		t.Errorf("mean gap between heartbeats after the heal %v; want about the interval %v (between %v and %v)", mean, interval, interval/2, interval+margin/gaps)
	}
}

// 3. A worker killed with SIGKILL turns stale within stale_after plus one interval, and infer is no longer routed to it.
func TestStaleness(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.FullStack, integration.WithServices("queen", "hive-1", "hub", "worker-1"), withInterval)
	ctx := suite.Context(t, 2*time.Minute)
	q := h.MustQueen(t)
	var hist checks.History

	// Two workers serve the model: the hive's (to be killed) and standalone worker-1.
	w := spawnWorker(t, q, &hist, "hive-1")
	if err := awaitAllFresh(ctx, q, []string{w.WorkerID, "worker-1"}, nil, 20*time.Second); err != nil {
		t.Fatal(err)
	}

	r := h.MustExec(t, "hive-1", []string{"kill", "-KILL", fmt.Sprint(w.PID)}, integration.AsUser("rbee"))
	if r.ExitCode != 0 {
		t.Fatalf("kill -KILL %d in hive-1: exit %d: %s", w.PID, r.ExitCode, r.Stderr)
	}
	t0 := time.Now()
	silent, err := awaitStaleBounded(ctx, q, w.WorkerID, staleAfter, staleAfter+interval+margin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("worker %s stale %v after SIGKILL, %v after its last heartbeat (bound: stale_after %v + interval %v)", w.WorkerID, time.Since(t0).Round(time.Millisecond), silent.Round(time.Millisecond), staleAfter, interval)

	// The scheduler spreads load across hives, so with the stale worker
	// still a candidate one of these would be routed to it.
	seed := uint64(1)
	for i := range 3 {
		out := suite.Run(t, time.Minute, q, &hist, api.JobRequest{Operation: api.OpInfer, Model: suite.TinyModel, Prompt: "Alice", MaxTokens: 8, Seed: &seed})
		if got := suite.RoutedWorkers(t, out); !slices.Equal(got, []string{"worker-1"}) {
			t.Fatalf("infer %d routed to %v; want only worker-1 (killed: %s)", i, got, w.WorkerID)
		}
	}
	if row, ok, err := checks.Worker(ctx, q, w.WorkerID); err != nil || !ok || !row.Stale {
		t.Fatalf("killed worker %s: registered %v, row %+v, err %v; want still listed as stale", w.WorkerID, ok, row, err)
	}
	suite.NothingLost(t, time.Minute, q, &hist)
}

// 4. After a queen restart and an outage of many intervals in which no heartbeat gets through, the registry stays empty, every hive and worker is back within one interval (plus slack) once they can reach it, and no worker process restarted.
func TestAfterQueenRestart(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.FullStack, withInterval)
	ctx := suite.Context(t, 3*time.Minute)
	q := h.MustQueen(t)
	// The restarted queen forgets the jobs in hist (they live in its
	// memory), so this test cannot ask CheckNothingLost about them.
	var hist checks.History

	w := spawnWorker(t, q, &hist, "hive-1")
	workers := []string{w.WorkerID, "worker-1", "worker-2"}
	hives := []string{"hive-1", "hive-2"}
	if err := awaitAllFresh(ctx, q, workers, hives, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	before := hivePIDs(t, q, &hist, "hive-1")
	standalone := map[string]int{"worker-1": containerWorkerPID(t, h, "worker-1"), "worker-2": containerWorkerPID(t, h, "worker-2")}

	// Hold every heartbeat back (refused, so senders fail fast) while the
	// queen restarts: its registry can then be seen empty, deterministically.
	senders := []string{"hive-1", "hive-2", "worker-1", "worker-2"}
	for _, s := range senders {
		h.MustInject(t, integration.Reject(s, "queen"))
	}
	h.MustRestart(t, "queen")
	h.MustWaitForHealthy(t, "queen", 30*time.Second)
	q = h.MustQueen(t) // a restart publishes a new host port
	ws, err := q.Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := q.Hives(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 0 {
		t.Fatalf("registry after restart has workers %+v; want none until heartbeats arrive", ws)
	}
	for _, hv := range hs {
		if hv.State != api.HiveUnknown || hv.LastSeen != nil {
			t.Fatalf("after restart hive %s is %s (last_seen %v); want unknown, never seen", hv.Alias, hv.State, hv.LastSeen)
		}
	}

	// The outage: many intervals of refused heartbeats, long enough for a
	// sender that gives up after a few failures, or backs off
	// exponentially, to show it. The registry stays empty meanwhile (a
	// state that must hold over a window, so watched, not awaited).
	const outage = 20 * interval
	for end := time.Now().Add(outage); time.Now().Before(end); time.Sleep(5 * checks.PollInterval) {
		if ws, err := q.Workers(ctx); err != nil || len(ws) != 0 {
			t.Fatalf("during the outage the registry has workers %+v (%v); want none", ws, err)
		}
	}
	h.MustRecoverAll(t)
	t0 := time.Now()
	if err := awaitAllFresh(ctx, q, workers, hives, interval+arrivalSlack); err != nil {
		t.Fatal(err)
	}
	t.Logf("all %d workers and %d hives back %v after an outage of %v", len(workers), len(hives), time.Since(t0).Round(time.Millisecond), outage)

	if after := hivePIDs(t, q, &hist, "hive-1"); !maps.Equal(after, before) {
		t.Errorf("hive-1 worker pids before %v, after %v: a worker restarted", before, after)
	}
	for svc, pid := range standalone {
		if got := containerWorkerPID(t, h, svc); got != pid {
			t.Errorf("%s: llm-worker-rbee pid %d before the queen restart, %d after", svc, pid, got)
		}
	}
}

// 5. Five standalone worker containers plus hive workers are all tracked; killing one makes exactly that one stale.
func TestManyWorkers(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.FullStack, withInterval)
	ctx := suite.Context(t, 3*time.Minute)
	q := h.MustQueen(t)
	var hist checks.History

	standalone := []string{"worker-1", "worker-2", "worker-3", "worker-4", "worker-5"}
	for _, name := range standalone[2:] {
		h.MustCloneService(t, "worker-1", name, time.Minute)
	}
	all := slices.Clone(standalone)
	for _, hive := range []string{"hive-1", "hive-2"} {
		all = append(all, spawnWorker(t, q, &hist, hive).WorkerID)
	}
	if err := awaitAllFresh(ctx, q, all, []string{"hive-1", "hive-2"}, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	ws, err := q.Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != len(all) {
		t.Fatalf("GET /v1/workers has %d workers, want exactly %v", len(ws), all)
	}

	const victim = "worker-3"
	h.MustKill(t, victim)
	t0 := time.Now()
	if _, err := checks.AwaitWorker(ctx, q, victim, staleAfter+interval+arrivalSlack, "stale", checks.Stale); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s stale %v after SIGKILL", victim, time.Since(t0).Round(time.Millisecond))
	// One snapshot in which exactly the victim is stale and every other
	// worker fresh. On a loaded machine a live worker can miss stale_after
	// for a moment, so the snapshot is polled until it holds; a queen that
	// marked others stale along with the victim never gets there.
	err = checks.Await(ctx, 10*interval+arrivalSlack, "exactly "+victim+" stale", func(ctx context.Context) (bool, string, error) {
		ws, err := q.Workers(ctx)
		if err != nil {
			return false, "", err
		}
		got := staleIDs(ws)
		return slices.Equal(got, []string{victim}) && len(ws) == len(all), fmt.Sprintf("stale workers %v of %d listed; want exactly [%s] of %d", got, len(ws), victim, len(all)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	suite.NothingLost(t, time.Minute, q, &hist)
}

func staleIDs(ws []api.WorkerInfo) []string {
	var ids []string
	for _, w := range ws {
		if w.Stale {
			ids = append(ids, w.WorkerID)
		}
	}
	slices.Sort(ids)
	return ids
}
