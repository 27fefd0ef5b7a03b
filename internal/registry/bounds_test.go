package registry

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
)

// A heartbeat with an oversized field is refused, naming the field, and
// stores nothing.
func TestHeartbeatFieldBoundsRefused(t *testing.T) {
	r, _ := newTest(t)
	hb := whb("w-1", "hive-1", strings.Repeat("m", 1<<20), api.WorkerReady)
	if _, err := r.WorkerHeartbeat(hb); err == nil || !strings.Contains(err.Error(), `"model"`) {
		t.Fatalf("1 MB model: err = %v, want one naming \"model\"", err)
	}
	if len(r.Workers()) != 0 {
		t.Fatalf("refused heartbeat was stored: %+v", r.Workers())
	}
	_, err := r.HiveHeartbeat(api.HiveHeartbeat{HiveID: "hive-x", URL: "http://x:9000", Workers: make([]string, api.MaxHeartbeatWkrs+1)})
	if err == nil || !strings.Contains(err.Error(), `"workers"`) {
		t.Fatalf("too many workers: err = %v, want one naming \"workers\"", err)
	}
	if _, ok := r.Hive("hive-x"); ok {
		t.Fatal("refused hive heartbeat created a learned hive")
	}
}

// New workers beyond the cap are refused with a FullError; known ones
// still update; after eviction there is room again.
func TestWorkerCap(t *testing.T) {
	clk := &fakeClock{t: time.Date(2025, 10, 24, 12, 0, 0, 0, time.UTC)}
	r := New(nil, Options{StaleAfter: time.Second, EvictAfter: 10 * time.Second, Now: clk.Now, MaxWorkers: 3})
	for i := range 3 {
		if _, err := r.WorkerHeartbeat(whb(fmt.Sprintf("w-%d", i), "h", "m", api.WorkerReady)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := r.WorkerHeartbeat(whb("w-new", "h", "m", api.WorkerReady))
	var fe *FullError
	if !errors.As(err, &fe) || fe.Max != 3 {
		t.Fatalf("4th worker: err = %v, want a FullError with Max 3", err)
	}
	if _, err := r.WorkerHeartbeat(whb("w-0", "h", "m", api.WorkerBusy)); err != nil {
		t.Fatalf("a known worker at the cap is refused: %v", err)
	}
	if n := len(r.Workers()); n != 3 {
		t.Fatalf("%d workers, want 3", n)
	}
	clk.Add(11 * time.Second)
	if _, err := r.WorkerHeartbeat(whb("w-new", "h", "m", api.WorkerReady)); err != nil {
		t.Fatalf("after the others were evicted: %v", err)
	}
}

// Learned hives are capped; configured hives are not counted.
func TestLearnedHiveCap(t *testing.T) {
	clk := &fakeClock{t: time.Date(2025, 10, 24, 12, 0, 0, 0, time.UTC)}
	r := New([]HiveSpec{{Alias: "conf"}}, Options{StaleAfter: time.Second, EvictAfter: 10 * time.Second, Now: clk.Now, MaxLearnedHives: 2})
	hhb := func(id string) api.HiveHeartbeat { return api.HiveHeartbeat{HiveID: id, URL: "http://" + id + ":9000"} }
	for _, id := range []string{"conf", "l1", "l2"} {
		if _, err := r.HiveHeartbeat(hhb(id)); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	var fe *FullError
	if _, err := r.HiveHeartbeat(hhb("l3")); !errors.As(err, &fe) {
		t.Fatalf("3rd learned hive: err = %v, want a FullError", err)
	}
	if n := len(r.Hives()); n != 3 {
		t.Fatalf("%d hives, want 3", n)
	}
	clk.Add(11 * time.Second)
	if _, err := r.HiveHeartbeat(hhb("l3")); err != nil {
		t.Fatalf("after eviction: %v", err)
	}
	if hs := r.Hives(); len(hs) != 2 || hs[0].Alias != "conf" || hs[1].Alias != "l3" {
		t.Fatalf("hives after eviction = %+v; want conf, l3", hs)
	}
}

// Evicting many learned hives is one pass, not one scan of the order per
// hive: 50 000 evictions took seconds with a scan each (O(n²)), and take
// milliseconds now. The bound is wide for a loaded machine.
func TestSweepIsLinear(t *testing.T) {
	const n = 50_000
	clk := &fakeClock{t: time.Date(2025, 10, 24, 12, 0, 0, 0, time.UTC)}
	r := New(nil, Options{StaleAfter: time.Second, EvictAfter: 10 * time.Second, Now: clk.Now, MaxLearnedHives: n + 1})
	for i := range n {
		id := fmt.Sprintf("h-%d", i)
		if _, err := r.HiveHeartbeat(api.HiveHeartbeat{HiveID: id, URL: "http://x:9000"}); err != nil {
			t.Fatal(err)
		}
	}
	clk.Add(11 * time.Second)
	start := time.Now()
	r.mu.Lock()
	r.sweepLocked(clk.Now())
	r.mu.Unlock()
	took := time.Since(start)
	if len(r.hives) != 0 || len(r.order) != 0 || r.learned != 0 {
		t.Fatalf("after the sweep: %d hives, %d in order, learned %d; want none", len(r.hives), len(r.order), r.learned)
	}
	if took > time.Second {
		t.Fatalf("sweeping %d learned hives took %s; want well under 1s (linear)", n, took)
	}
}
