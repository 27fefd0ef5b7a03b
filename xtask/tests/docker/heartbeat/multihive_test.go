//go:build docker

package heartbeat

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// readTolerance is how far a registry read may lag the host clock around
// it: the queen computes staleness when it answers, somewhere between the
// request leaving and the answer arriving; polling adds checks.PollInterval.
const readTolerance = time.Second

// arrivalSlack is added to a bound on when something arrives ("registered
// within one interval", "back within one interval after the heal"): on the
// shared two-core machine a container can stall for seconds, so such a bound
// catches a sender that gives up or backs off far beyond its interval, not a
// late millisecond.
const arrivalSlack = 10 * time.Second

// twoHives brings up the multi-hive topology with the pinned interval and
// one worker of suite.TinyModel on each hive (seeded: there is no hub); it returns
// the workers by hive.
func twoHives(t *testing.T) (*integration.Harness, *client.Client, map[string]api.WorkerProcess) {
	t.Helper()
	h := integration.Start(t, integration.MultiHive, withInterval)
	q := h.MustQueen(t)
	var hist checks.History
	ws := map[string]api.WorkerProcess{}
	for _, hv := range []string{"hive-1", "hive-2"} {
		if err := checks.AwaitHiveState(t.Context(), q, hv, api.HiveOnline, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		suite.SeedModel(t, h, q, hv, suite.TinyModel)
		ws[hv] = suite.SpawnWorker(t, q, &hist, hv, suite.TinyModel)
	}
	return h, q, ws
}

// hiveSnapshot is one read of both registries, bracketed by host times.
type hiveSnapshot struct {
	before, after time.Time
	hives         map[string]api.HiveInfo
	workers       map[string]api.WorkerInfo
}

func snapshot(ctx context.Context, q *client.Client) (hiveSnapshot, error) {
	s := hiveSnapshot{before: time.Now(), hives: map[string]api.HiveInfo{}, workers: map[string]api.WorkerInfo{}}
	hs, err := q.Hives(ctx)
	if err != nil {
		return s, err
	}
	ws, err := q.Workers(ctx)
	if err != nil {
		return s, err
	}
	s.after = time.Now()
	for _, h := range hs {
		s.hives[h.Alias] = h
	}
	for _, w := range ws {
		s.workers[w.WorkerID] = w
	}
	return s, nil
}

// Both hives of the multi-hive topology heartbeat on their own: each is
// online, and each worker is listed under the hive that spawned it, with a
// URL on that hive's machine.
func TestTwoHivesRegisterSeparately(t *testing.T) {
	t.Parallel()
	_, q, ws := twoHives(t)
	ctx := suite.Context(t, time.Minute)
	s, err := snapshot(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	for hv, wp := range ws {
		info := s.hives[hv]
		if info.State != api.HiveOnline || info.LastSeen == nil {
			t.Errorf("%s: %+v; want online with a last_seen", hv, info)
		}
		w, ok := s.workers[wp.WorkerID]
		if !ok {
			t.Fatalf("worker %s of %s is not in GET /v1/workers", wp.WorkerID, hv)
		}
		u, err := url.Parse(w.URL)
		if w.HiveID != hv || err != nil || u.Hostname() != hv {
			t.Errorf("worker %s spawned on %s is registered as hive %q at %q; want hive %s at a URL on host %s", wp.WorkerID, hv, w.HiveID, w.URL, hv, hv)
		}
	}
	if len(s.workers) != len(ws) {
		t.Errorf("GET /v1/workers lists %d workers; want exactly the %d spawned", len(s.workers), len(ws))
	}
}

// Cutting hive-1's heartbeats (hive and its worker) turns exactly hive-1
// offline and its worker stale, no earlier than stale_after after hive-1's
// last heartbeat and no later than stale_after plus the read tolerance,
// while hive-2's last_seen keeps advancing and hive-2 and its worker stay
// online and fresh throughout; after the heal hive-1's last_seen advances
// again.
func TestTwoHivesIndependentLastSeen(t *testing.T) {
	t.Parallel()
	h, q, ws := twoHives(t)
	ctx := suite.Context(t, 3*time.Minute)
	w1, w2 := ws["hive-1"].WorkerID, ws["hive-2"].WorkerID

	h.MustInject(t, integration.Block("hive-1", "queen"))
	t0 := time.Now()
	var h2Seen []time.Time
	var offlineAt time.Duration
	err := checks.Await(ctx, staleAfter+10*interval+margin, "hive-1 offline and worker stale, hive-2 advancing", func(ctx context.Context) (bool, string, error) {
		s, err := snapshot(ctx, q)
		if err != nil {
			return false, "", err
		}
		h1, h2 := s.hives["hive-1"], s.hives["hive-2"]
		if h1.LastSeen == nil || h2.LastSeen == nil {
			return false, "", fmt.Errorf("a hive has no last_seen: %+v %+v", h1, h2)
		}
		// hive-2 and its worker are untouched by hive-1's cut.
		if h2.State != api.HiveOnline || s.workers[w2].Stale {
			return false, "", fmt.Errorf("hive-2 %s, its worker stale=%v, %v after hive-1 was cut; want online and fresh", h2.State, s.workers[w2].Stale, s.after.Sub(t0))
		}
		if n := len(h2Seen); n == 0 || h2.LastSeen.After(h2Seen[n-1]) {
			h2Seen = append(h2Seen, *h2.LastSeen)
		}
		// hive-1: offline exactly once stale_after has passed since its last
		// heartbeat, from both sides.
		silent := s.after.Sub(*h1.LastSeen)
		if h1.State == api.HiveOffline && silent < staleAfter {
			return false, "", fmt.Errorf("hive-1 offline only %v after its last heartbeat; stale_after is %v", silent, staleAfter)
		}
		if h1.State == api.HiveOnline && s.before.Sub(*h1.LastSeen) > staleAfter+readTolerance {
			return false, "", fmt.Errorf("hive-1 still online %v after its last heartbeat; stale_after is %v", s.before.Sub(*h1.LastSeen), staleAfter)
		}
		wk := s.workers[w1]
		if wk.Stale && s.after.Sub(wk.LastSeen) < staleAfter {
			return false, "", fmt.Errorf("hive-1's worker stale only %v after its last heartbeat", s.after.Sub(wk.LastSeen))
		}
		if h1.State == api.HiveOffline && offlineAt == 0 {
			offlineAt = s.after.Sub(t0)
		}
		// Enough hive-2 heartbeats seen to show it kept advancing past the
		// moment hive-1 went offline.
		done := h1.State == api.HiveOffline && wk.Stale && len(h2Seen) >= 4 && h2Seen[len(h2Seen)-1].After(t0.Add(staleAfter))
		return done, fmt.Sprintf("hive-1 %s (silent %v), its worker stale=%v; hive-2 last_seen advanced %d times", h1.State, silent.Round(time.Millisecond), wk.Stale, len(h2Seen)-1), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("hive-1 offline %v after the cut; hive-2 last_seen advanced %d times meanwhile", offlineAt.Round(time.Millisecond), len(h2Seen)-1)

	h.MustRecoverAll(t)
	before, err := checks.Hive(ctx, q, "hive-1")
	if err != nil {
		t.Fatal(err)
	}
	var h1Seen []time.Time
	err = checks.Await(ctx, 10*interval+margin, "hive-1 advancing again", func(ctx context.Context) (bool, string, error) {
		hv, err := checks.Hive(ctx, q, "hive-1")
		if err != nil || hv.LastSeen == nil {
			return false, "", err
		}
		if hv.LastSeen.After(*before.LastSeen) && (len(h1Seen) == 0 || hv.LastSeen.After(h1Seen[len(h1Seen)-1])) {
			h1Seen = append(h1Seen, *hv.LastSeen)
		}
		return hv.State == api.HiveOnline && len(h1Seen) >= 3, fmt.Sprintf("hive-1 %s, %d new last_seen values", hv.State, len(h1Seen)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checks.AwaitWorker(ctx, q, w1, 10*interval+margin, "fresh again", checks.Fresh); err != nil {
		t.Fatal(err)
	}
}

// awaitStaleBounded waits until worker id turns stale after it was killed
// at killed, bounded from both sides by the queen's own clock: no read may
// show it stale before staleAfter has passed since its last heartbeat (the
// queen's last_seen), and none may show it fresh once staleAfter plus the
// read tolerance has passed. The lower bound is the general form of "not
// stale at kill + stale_after/2": the last heartbeat came at most an interval
// before the kill, so a worker stale that early would have been silent for
// less than stale_after. It returns how long the worker had been silent when
// it was first seen stale.
func awaitStaleBounded(ctx context.Context, q *client.Client, id string, staleAfter, timeout time.Duration) (time.Duration, error) {
	var silent time.Duration
	err := checks.Await(ctx, timeout, "worker "+id+" stale, not before stale_after", func(ctx context.Context) (bool, string, error) {
		before := time.Now()
		w, ok, err := checks.Worker(ctx, q, id)
		after := time.Now()
		if err != nil || !ok {
			return false, "worker " + id + " not registered", err
		}
		switch {
		case w.Stale && after.Sub(w.LastSeen) < staleAfter:
			return false, "", fmt.Errorf("worker %s stale only %v after its last heartbeat; stale_after is %v", id, after.Sub(w.LastSeen), staleAfter)
		case w.Stale:
			silent = after.Sub(w.LastSeen)
			return true, "", nil
		case before.Sub(w.LastSeen) > staleAfter+readTolerance:
			return false, "", fmt.Errorf("worker %s still fresh %v after its last heartbeat; stale_after is %v", id, before.Sub(w.LastSeen), staleAfter)
		}
		return false, fmt.Sprintf("fresh, silent for %v", before.Sub(w.LastSeen).Round(time.Millisecond)), nil
	})
	return silent, err
}
