//go:build docker

package heartbeat

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

const queenPort = 8500

// hiveWatch is what polling GET /v1/hives saw of one hive over a window.
type hiveWatch struct {
	polls    int
	states   map[string]int // state → polls that saw it
	firstOff time.Duration  // since the window began, when a poll first saw it not online (-1: never)
	seen     []time.Time    // distinct last_seen values, in order
	backward bool           // last_seen went backwards
}

// maxGap is the longest time between successive distinct last_seen values
// (polls miss some heartbeats, so it is at least the true longest gap), and
// the window's start and end count as ends of a gap too.
func (w hiveWatch) maxGap(start, end time.Time) time.Duration {
	prev, gap := start, time.Duration(0)
	for _, s := range append(w.seen, end) {
		if s.Before(prev) {
			continue
		}
		gap = max(gap, s.Sub(prev))
		prev = s
	}
	return gap
}

func (w hiveWatch) String() string {
	return fmt.Sprintf("%d polls, states %v, %d distinct last_seen", w.polls, w.states, len(w.seen))
}

// watchHive polls alias's row in GET /v1/hives every checks.PollInterval
// for d.
func watchHive(ctx context.Context, t *testing.T, q *client.Client, alias string, d time.Duration) (hiveWatch, time.Time) {
	t.Helper()
	w := hiveWatch{states: map[string]int{}, firstOff: -1}
	start := time.Now()
	for time.Since(start) < d {
		row, err := checks.Hive(ctx, q, alias)
		if err != nil {
			t.Fatalf("GET /v1/hives: %v", err)
		}
		w.polls++
		w.states[row.State]++
		if row.State != api.HiveOnline && w.firstOff < 0 {
			w.firstOff = time.Since(start)
		}
		if row.LastSeen != nil {
			ls := *row.LastSeen
			if n := len(w.seen); n == 0 || ls.After(w.seen[n-1]) {
				w.seen = append(w.seen, ls)
			} else if ls.Before(w.seen[n-1]) {
				w.backward = true
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(checks.PollInterval):
		}
	}
	return w, start
}

// dropConnections aborts the established connections from has open to
// to:port, if it has any (an idle keep-alive connection may or may not be
// open), so that its next ones are new. Once a toxic is in force the list
// also holds the proxied connections and the proxy's own to the peer, so it
// is one pass: a connection that closed by itself between the listing and
// the cut is no error.
func dropConnections(t *testing.T, ctx context.Context, h *integration.Harness, from, to string, port int) {
	t.Helper()
	cs, err := h.Connections(ctx, from, to, port)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) > 0 {
		_, _ = h.CutConnections(ctx, from, to, port)
	}
}

// Heartbeats over a jittery link (connection-level latency 1 s ± 500 ms on
// the hive's connections to the queen, the heartbeat POSTs delayed): over
// four stale_after periods the hive never turns stale, every poll sees it
// online, last_seen keeps advancing (no gap of stale_after) and never goes
// backwards. The toxic is shown in force by a request from the hive that
// pays the latency. Negative control: latency at twice stale_after, with
// the same watcher, turns the hive offline within stale_after plus the
// slow heartbeats' delay; recovered, it is online again within the same
// bound.
func TestHeartbeatsOverJitteryLink(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.FullStack, integration.WithServices("queen", "hive-1"), withInterval)
	ctx := suite.Context(t, 5*time.Minute)
	q := h.MustQueen(t)
	if err := checks.AwaitHiveState(ctx, q, "hive-1", api.HiveOnline, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	const (
		delay  = time.Second
		jitter = 500 * time.Millisecond
		window = 4 * staleAfter
	)
	if delay+jitter+interval >= staleAfter {
		t.Fatalf("the jittery latency %v±%v plus the interval %v must stay below stale_after %v", delay, jitter, interval, staleAfter)
	}
	h.MustInject(t, integration.Latency("hive-1", "queen", delay, jitter).Upstream())
	// The toxic catches new connections: drop the hive's keep-alive one.
	dropConnections(t, ctx, h, "hive-1", "queen", queenPort)
	ip, err := h.IP("queen")
	if err != nil {
		t.Fatal(err)
	}
	r := h.MustExec(t, "hive-1", []string{"curl", "-sS", "-o", "/dev/null", "-m", "30", "-w", "%{time_total}", fmt.Sprintf("http://%s:%d/health", ip, queenPort)})
	var took float64
	if _, err := fmt.Sscan(r.Stdout, &took); r.ExitCode != 0 || err != nil {
		t.Fatalf("GET /health from hive-1: exit %d %q %q", r.ExitCode, r.Stdout, r.Stderr)
	}
	if d := time.Duration(took * float64(time.Second)); d < delay-jitter {
		t.Fatalf("a request from hive-1 to the queen took %v under %v±%v latency: the toxic is not in force", d, delay, jitter)
	}

	w, start := watchHive(ctx, t, q, "hive-1", window)
	gap := w.maxGap(start, time.Now())
	t.Logf("latency %v±%v for %v: %v; longest last_seen gap %v (stale_after %v)", delay, jitter, window, w, gap.Round(time.Millisecond), staleAfter)
	if w.states[api.HiveOnline] != w.polls {
		t.Errorf("the hive flapped: states %v over %d polls, want online on every one", w.states, w.polls)
	}
	if w.backward {
		t.Error("last_seen went backwards")
	}
	if gap >= staleAfter {
		t.Errorf("last_seen did not advance for %v, want every gap under stale_after %v", gap, staleAfter)
	}
	// At least one heartbeat per stale_after period, or the windows above
	// say nothing.
	if len(w.seen) < int(window/staleAfter) {
		t.Errorf("only %d distinct last_seen values in %v", len(w.seen), window)
	}

	// Negative control: the same watcher sees a latency above stale_after.
	const slow = 2 * staleAfter
	h.MustInject(t, integration.Latency("hive-1", "queen", slow, 0).Upstream())
	bound := staleAfter + slow + margin
	w, _ = watchHive(ctx, t, q, "hive-1", bound)
	t.Logf("latency %v: %v; first seen not online after %v", slow, w, w.firstOff.Round(time.Millisecond))
	if w.firstOff < 0 {
		t.Fatalf("with %v latency (stale_after %v) the hive stayed online for %v: %v", slow, staleAfter, bound, w)
	}
	h.MustRecover(t, integration.Latency("hive-1", "queen", slow, 0).Upstream())
	if err := checks.AwaitHiveState(ctx, q, "hive-1", api.HiveOnline, slow+margin); err != nil {
		t.Fatalf("after recovering the latency: %v", err)
	}
}
