package scheduler

import (
	"errors"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/registry"
)

func heartbeat(t *testing.T, r *registry.Registry, id, hive, state string) {
	t.Helper()
	_, err := r.WorkerHeartbeat(api.WorkerHeartbeat{WorkerID: id, HiveID: hive, Model: "m", Device: "cpu:0", URL: "http://" + hive + ":9100", State: state})
	if err != nil {
		t.Fatal(err)
	}
}

func TestNoWorker(t *testing.T) {
	s := New(registry.New(nil, registry.Options{}))
	_, _, err := s.Pick("m", "")
	var nw *NoWorkerError
	if !errors.As(err, &nw) || err.Error() != "no ready worker for model m" {
		t.Fatalf("err = %v", err)
	}
	_, _, err = s.Pick("m", "hive-1")
	if err == nil || err.Error() != "no ready worker for model m on hive hive-1" {
		t.Fatalf("err = %v", err)
	}
}

// Equal load spreads across hives: hive-1 has two workers, hive-2 one, and
// four picks alternate hives instead of following worker order.
func TestSpreadAcrossHives(t *testing.T) {
	r := registry.New(nil, registry.Options{})
	heartbeat(t, r, "w-1a", "hive-1", api.WorkerReady)
	heartbeat(t, r, "w-1b", "hive-1", api.WorkerReady)
	heartbeat(t, r, "w-2a", "hive-2", api.WorkerReady)
	s := New(r)
	perHive := map[string]int{}
	perWorker := map[string]int{}
	var last string
	for i := 0; i < 6; i++ {
		w, release, err := s.Pick("m", "")
		if err != nil {
			t.Fatal(err)
		}
		release()
		if w.HiveID == last {
			t.Fatalf("pick %d went to %s twice in a row", i, w.HiveID)
		}
		last = w.HiveID
		perHive[w.HiveID]++
		perWorker[w.WorkerID]++
	}
	if perHive["hive-1"] != 3 || perHive["hive-2"] != 3 {
		t.Fatalf("per hive = %v; want 3/3", perHive)
	}
	if perWorker["w-1a"] == 0 || perWorker["w-1b"] == 0 {
		t.Fatalf("per worker = %v; both hive-1 workers should be used", perWorker)
	}
}

func TestLeastBusyFirst(t *testing.T) {
	r := registry.New(nil, registry.Options{})
	heartbeat(t, r, "w-1", "hive-1", api.WorkerReady)
	heartbeat(t, r, "w-2", "hive-2", api.WorkerReady)
	s := New(r)
	a, relA, _ := s.Pick("m", "")
	b, relB, _ := s.Pick("m", "")
	if a.WorkerID == b.WorkerID {
		t.Fatalf("two concurrent picks both went to %s", a.WorkerID)
	}
	relA()
	relA() // release is idempotent
	c, relC, _ := s.Pick("m", "")
	if c.WorkerID != a.WorkerID {
		t.Fatalf("third pick = %s; want the idle %s", c.WorkerID, a.WorkerID)
	}
	if s.InFlight(b.WorkerID) != 1 || s.InFlight(a.WorkerID) != 1 {
		t.Fatalf("in flight: %s=%d %s=%d", a.WorkerID, s.InFlight(a.WorkerID), b.WorkerID, s.InFlight(b.WorkerID))
	}
	relB()
	relC()
}

func TestReadyBeforeBusyAndHiveFilter(t *testing.T) {
	r := registry.New(nil, registry.Options{})
	heartbeat(t, r, "w-1", "hive-1", api.WorkerBusy)
	heartbeat(t, r, "w-2", "hive-2", api.WorkerReady)
	s := New(r)
	w, rel, _ := s.Pick("m", "")
	rel()
	if w.WorkerID != "w-2" {
		t.Fatalf("picked %s; want the ready w-2", w.WorkerID)
	}
	w, rel, _ = s.Pick("m", "hive-1")
	rel()
	if w.WorkerID != "w-1" {
		t.Fatalf("picked %s on hive-1", w.WorkerID)
	}
	w, rel, err := s.Pick("m", "", "w-2")
	if err != nil || w.WorkerID != "w-1" {
		t.Fatalf("exclude: %v %v", w.WorkerID, err)
	}
	rel()
}

func TestStaleNeverPicked(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	r := registry.New(nil, registry.Options{StaleAfter: time.Second, Now: func() time.Time { return clock() }})
	heartbeat(t, r, "w-1", "hive-1", api.WorkerReady)
	now = now.Add(2 * time.Second)
	if _, _, err := New(r).Pick("m", ""); err == nil {
		t.Fatal("a stale worker was picked")
	}
}
