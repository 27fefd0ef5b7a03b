package scheduler

import (
	"fmt"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/registry"
)

// Workers (and their hives) that come and go leave no round-robin history
// behind: the maps stay near the prune threshold however many pass through,
// while the history of live workers is kept.
func TestRoundRobinHistoryPruned(t *testing.T) {
	r := registry.New(nil, registry.Options{StaleAfter: time.Hour})
	s := New(r)
	heartbeat(t, r, "w-live", "hive-live", api.WorkerReady)
	if _, rel, err := s.Pick("m", "hive-live"); err != nil {
		t.Fatal(err)
	} else {
		rel()
	}
	const n = 5000
	for i := range n {
		id, hive := fmt.Sprintf("w-%d", i), fmt.Sprintf("hive-%d", i)
		heartbeat(t, r, id, hive, api.WorkerReady)
		w, rel, err := s.Pick("m", hive)
		if err != nil || w.WorkerID != id {
			t.Fatalf("pick %d: %v %v", i, w.WorkerID, err)
		}
		rel()
		r.RemoveWorker(id)
	}
	wn, hn := s.HistoryLen()
	if wn > minPruneAt+1 || hn > minPruneAt+1 {
		t.Fatalf("after %d short-lived workers the history holds %d workers and %d hives; want at most %d", n, wn, hn, minPruneAt+1)
	}
	s.mu.Lock()
	_, liveW := s.lastWkr["w-live"]
	_, liveH := s.lastHive["hive-live"]
	s.mu.Unlock()
	if !liveW || !liveH {
		t.Fatalf("the live worker's history was pruned (worker %v, hive %v)", liveW, liveH)
	}
}
