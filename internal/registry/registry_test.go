package registry

import (
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
)

// fakeClock is a settable clock for staleness tests without sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTest(t *testing.T) (*Registry, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Date(2025, 10, 24, 12, 0, 0, 0, time.UTC)}
	r := New([]HiveSpec{{Alias: "hive-1", Hostname: "hive-1", HivePort: 9000, SSHPort: 22}, {Alias: "hive-2", Hostname: "hive-2", HivePort: 9000, SSHPort: 22}},
		Options{StaleAfter: 30 * time.Second, Now: clk.Now})
	return r, clk
}

func whb(id, hive, model, state string) api.WorkerHeartbeat {
	return api.WorkerHeartbeat{WorkerID: id, HiveID: hive, Model: model, Device: "cpu:0", URL: "http://" + hive + ":9100", State: state}
}

func TestConfiguredHivesStartUnknown(t *testing.T) {
	r, _ := newTest(t)
	hs := r.Hives()
	if len(hs) != 2 || hs[0].Alias != "hive-1" || hs[1].Alias != "hive-2" {
		t.Fatalf("hives = %+v", hs)
	}
	for _, h := range hs {
		if h.State != api.HiveUnknown || h.LastSeen != nil {
			t.Errorf("%s: state %q last_seen %v; want unknown, nil", h.Alias, h.State, h.LastSeen)
		}
	}
}

func TestHiveOnlineThenOfflineWhenStale(t *testing.T) {
	r, clk := newTest(t)
	devs := []api.Device{{ID: "CPU-0", DeviceType: "cpu"}}
	if _, err := r.HiveHeartbeat(api.HiveHeartbeat{HiveID: "hive-1", URL: "http://hive-1:9000", Devices: devs}); err != nil {
		t.Fatal(err)
	}
	h, _ := r.Hive("hive-1")
	if h.State != api.HiveOnline || len(h.Devices) != 1 {
		t.Fatalf("after heartbeat: %+v; want online with 1 device", h)
	}
	clk.Add(31 * time.Second)
	if h, _ := r.Hive("hive-1"); h.State != api.HiveOffline {
		t.Fatalf("after 31s: state %q; want offline", h.State)
	}
	_, _ = r.HiveHeartbeat(api.HiveHeartbeat{HiveID: "hive-1", URL: "http://hive-1:9000"})
	if h, _ := r.Hive("hive-1"); h.State != api.HiveOnline || len(h.Devices) != 1 {
		t.Fatalf("after new heartbeat: %+v; want online, devices kept", h)
	}
	r.MarkHiveOffline("hive-1")
	if h, _ := r.Hive("hive-1"); h.State != api.HiveOffline {
		t.Fatalf("after MarkHiveOffline: %q", h.State)
	}
}

func TestUnknownHiveLearnedFromHeartbeat(t *testing.T) {
	r, _ := newTest(t)
	if _, err := r.HiveHeartbeat(api.HiveHeartbeat{HiveID: "hive-9", URL: "http://10.0.0.9:9123"}); err != nil {
		t.Fatal(err)
	}
	h, ok := r.Hive("hive-9")
	if !ok || h.Hostname != "10.0.0.9" || h.HivePort != 9123 || h.State != api.HiveOnline {
		t.Fatalf("learned hive = %+v, %v", h, ok)
	}
}

func TestWorkerStaleness(t *testing.T) {
	r, clk := newTest(t)
	if _, err := r.WorkerHeartbeat(whb("w-1", "hive-1", "m", api.WorkerReady)); err != nil {
		t.Fatal(err)
	}
	if c := r.Candidates("m", ""); len(c) != 1 {
		t.Fatalf("candidates = %d; want 1", len(c))
	}
	clk.Add(30 * time.Second)
	if w, _ := r.Worker("w-1"); w.Stale {
		t.Fatal("stale at exactly stale_after; want fresh")
	}
	clk.Add(time.Millisecond)
	w, _ := r.Worker("w-1")
	if !w.Stale {
		t.Fatal("not stale after stale_after")
	}
	if c := r.Candidates("m", ""); len(c) != 0 {
		t.Fatalf("stale worker is a candidate: %+v", c)
	}
	_, _ = r.WorkerHeartbeat(whb("w-1", "hive-1", "m", api.WorkerReady))
	if w, _ := r.Worker("w-1"); w.Stale {
		t.Fatal("still stale after a fresh heartbeat")
	}
}

func TestLastSeenNeverGoesBackwards(t *testing.T) {
	r, clk := newTest(t)
	_, _ = r.WorkerHeartbeat(whb("w-1", "hive-1", "m", api.WorkerReady))
	first, _ := r.Worker("w-1")
	clk.Add(-time.Hour) // the clock steps back
	hb := whb("w-1", "hive-1", "m", api.WorkerReady)
	hb.Timestamp = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) // and the worker's clock is wrong
	_, _ = r.WorkerHeartbeat(hb)
	second, _ := r.Worker("w-1")
	if second.LastSeen.Before(first.LastSeen) {
		t.Fatalf("last_seen went backwards: %v → %v", first.LastSeen, second.LastSeen)
	}
	clk.Add(2 * time.Hour)
	_, _ = r.WorkerHeartbeat(whb("w-1", "hive-1", "m", api.WorkerReady))
	third, _ := r.Worker("w-1")
	if !third.LastSeen.After(second.LastSeen) {
		t.Fatalf("last_seen did not advance: %v → %v", second.LastSeen, third.LastSeen)
	}
}

func TestCandidatesFilter(t *testing.T) {
	r, _ := newTest(t)
	for _, hb := range []api.WorkerHeartbeat{
		whb("w-1", "hive-1", "m", api.WorkerReady),
		whb("w-2", "hive-2", "m", api.WorkerBusy),
		whb("w-3", "hive-2", "m", api.WorkerStarting),
		whb("w-4", "hive-2", "m", api.WorkerStopping),
		whb("w-5", "hive-1", "other", api.WorkerReady),
	} {
		if _, err := r.WorkerHeartbeat(hb); err != nil {
			t.Fatal(err)
		}
	}
	if c := r.Candidates("m", ""); len(c) != 2 {
		t.Fatalf("candidates(m) = %+v; want w-1, w-2", c)
	}
	if c := r.Candidates("m", "hive-2"); len(c) != 1 || c[0].WorkerID != "w-2" {
		t.Fatalf("candidates(m, hive-2) = %+v; want w-2", c)
	}
	r.MarkHiveOffline("hive-2")
	if c := r.Candidates("m", "hive-2"); len(c) != 0 {
		t.Fatalf("worker on a stopped hive is a candidate: %+v", c)
	}
}

func TestBadHeartbeats(t *testing.T) {
	r, _ := newTest(t)
	for _, tc := range []struct {
		name string
		hb   api.WorkerHeartbeat
	}{
		{"no worker_id", api.WorkerHeartbeat{HiveID: "h", Model: "m", URL: "http://x:1", State: "ready"}},
		{"no hive_id", api.WorkerHeartbeat{WorkerID: "w", Model: "m", URL: "http://x:1", State: "ready"}},
		{"no model", api.WorkerHeartbeat{WorkerID: "w", HiveID: "h", URL: "http://x:1", State: "ready"}},
		{"bad state", api.WorkerHeartbeat{WorkerID: "w", HiveID: "h", Model: "m", URL: "http://x:1", State: "sleeping"}},
		{"no url", api.WorkerHeartbeat{WorkerID: "w", HiveID: "h", Model: "m", State: "ready"}},
		{"relative url", api.WorkerHeartbeat{WorkerID: "w", HiveID: "h", Model: "m", URL: "/x", State: "ready"}},
		{"ftp url", api.WorkerHeartbeat{WorkerID: "w", HiveID: "h", Model: "m", URL: "ftp://x:1", State: "ready"}},
	} {
		if _, err := r.WorkerHeartbeat(tc.hb); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if _, err := r.HiveHeartbeat(api.HiveHeartbeat{URL: "http://x:1"}); err == nil {
		t.Error("hive heartbeat without hive_id accepted")
	}
	if _, err := r.HiveHeartbeat(api.HiveHeartbeat{HiveID: "hive-1", URL: "nope"}); err == nil {
		t.Error("hive heartbeat with bad url accepted")
	}
	if len(r.Workers()) != 0 {
		t.Fatal("a bad heartbeat registered a worker")
	}
}

func TestConcurrentHeartbeats(t *testing.T) {
	r := New(nil, Options{})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				_, _ = r.WorkerHeartbeat(whb("w-"+string(rune('a'+g)), "hive-1", "m", api.WorkerReady))
				_, _ = r.HiveHeartbeat(api.HiveHeartbeat{HiveID: "hive-1", URL: "http://hive-1:9000"})
				_ = r.Workers()
				_ = r.Hives()
			}
		}(g)
	}
	wg.Wait()
	if n := len(r.Workers()); n != 8 {
		t.Fatalf("workers = %d; want 8", n)
	}
}

// Workers and learned hives silent for EvictAfter leave the registry (so
// ever-new ids cannot grow it without bound); stale ones stay listed
// until then, and configured hives always stay.
func TestEviction(t *testing.T) {
	r, clk := newTest(t) // stale after 30 s, evict after 5 min
	if _, err := r.WorkerHeartbeat(whb("w-old", "hive-1", "m", api.WorkerReady)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.HiveHeartbeat(api.HiveHeartbeat{HiveID: "hive-x", URL: "http://hive-x:9000"}); err != nil {
		t.Fatal(err)
	}
	_, _ = r.HiveHeartbeat(api.HiveHeartbeat{HiveID: "hive-1", URL: "http://hive-1:9000"})
	clk.Add(time.Minute)
	_, _ = r.WorkerHeartbeat(whb("w-new", "hive-1", "m", api.WorkerReady))
	if w, ok := r.Worker("w-old"); !ok || !w.Stale {
		t.Fatalf("after 1 min w-old should be listed and stale: %+v %v", w, ok)
	}
	clk.Add(5 * time.Minute)
	_, _ = r.WorkerHeartbeat(whb("w-new", "hive-1", "m", api.WorkerReady))
	if _, ok := r.Worker("w-old"); ok {
		t.Fatal("w-old still listed after 6 min of silence")
	}
	if _, ok := r.Worker("w-new"); !ok {
		t.Fatal("w-new was evicted")
	}
	if _, ok := r.Hive("hive-x"); ok {
		t.Fatal("learned hive-x still listed after 6 min of silence")
	}
	if _, ok := r.Hive("hive-1"); !ok {
		t.Fatal("configured hive-1 was evicted")
	}
}
