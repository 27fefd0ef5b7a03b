package registry

import (
	"errors"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
)

func boundRegistry(t *testing.T, opts Options) (*Registry, *time.Time) {
	t.Helper()
	now := time.Unix(1_800_000_000, 0)
	opts.Bind = true
	opts.Now = func() time.Time { return now }
	r := New([]HiveSpec{{Alias: "hive-1", Hostname: "hive-1", HivePort: 9000}}, opts)
	return r, &now
}

func hiveHB(ts time.Time, workers ...string) api.HiveHeartbeat {
	return api.HiveHeartbeat{HiveID: "hive-1", URL: "http://hive-1:9000", Timestamp: ts, Workers: workers}
}

func workerHB(id, url string, ts time.Time) api.WorkerHeartbeat {
	return api.WorkerHeartbeat{WorkerID: id, HiveID: "hive-1", Model: "m", Device: "cpu:0", URL: url, State: api.WorkerReady, Timestamp: ts}
}

func TestBoundWorkerNeedsItsHiveToListIt(t *testing.T) {
	r, now := boundRegistry(t, Options{})
	if _, err := r.WorkerHeartbeat(workerHB("w-1", "http://hive-1:9100", *now)); !errors.Is(err, ErrNotVouched) {
		t.Fatalf("before any hive heartbeat: %v, want ErrNotVouched", err)
	}
	if _, err := r.HiveHeartbeat(hiveHB(*now, "w-2")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.WorkerHeartbeat(workerHB("w-1", "http://hive-1:9100", now.Add(time.Millisecond))); !errors.Is(err, ErrNotVouched) {
		t.Fatalf("hive lists another worker: %v, want ErrNotVouched", err)
	}
	if _, err := r.HiveHeartbeat(hiveHB(now.Add(time.Second), "w-1", "w-2")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.WorkerHeartbeat(workerHB("w-1", "http://hive-1:9100", now.Add(2*time.Second))); err != nil {
		t.Fatalf("listed worker refused: %v", err)
	}
	if len(r.Workers()) != 1 {
		t.Fatalf("workers = %+v, want w-1 only", r.Workers())
	}
	// A listed id at another host is not the hive's worker.
	if _, err := r.WorkerHeartbeat(workerHB("w-2", "http://rogue:9100", now.Add(2*time.Second))); !errors.Is(err, ErrBinding) {
		t.Fatalf("worker off the hive's host: %v, want ErrBinding", err)
	}
}

func TestBoundWorkerKeepsItsURL(t *testing.T) {
	r, now := boundRegistry(t, Options{})
	r.HiveHeartbeat(hiveHB(*now, "w-1"))
	if _, err := r.WorkerHeartbeat(workerHB("w-1", "http://hive-1:9100", *now)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.WorkerHeartbeat(workerHB("w-1", "http://hive-1:9199", now.Add(time.Second))); !errors.Is(err, ErrBinding) {
		t.Fatalf("URL change: %v, want ErrBinding", err)
	}
	w, _ := r.Worker("w-1")
	if w.URL != "http://hive-1:9100" {
		t.Fatalf("URL became %s", w.URL)
	}
	if !r.WorkerHost(w) {
		t.Fatal("registered worker is not on its hive's host")
	}
	if r.WorkerHost(api.WorkerInfo{WorkerID: "x", HiveID: "hive-1", URL: "http://rogue:9100"}) {
		t.Fatal("WorkerHost accepts a URL on another host")
	}
}

func TestHeartbeatsMustBeNewer(t *testing.T) {
	r, now := boundRegistry(t, Options{})
	t0 := *now
	if _, err := r.HiveHeartbeat(hiveHB(t0, "w-1")); err != nil {
		t.Fatal(err)
	}
	h0, _ := r.Hive("hive-1")
	*now = now.Add(time.Second)
	// The same heartbeat again (a replay) and an older one (delayed in
	// flight) are refused and do not move last_seen.
	for _, ts := range []time.Time{t0, t0.Add(-time.Millisecond)} {
		if _, err := r.HiveHeartbeat(hiveHB(ts, "w-1")); !errors.Is(err, ErrNotNewer) {
			t.Fatalf("hive heartbeat sent %v: %v, want ErrNotNewer", ts, err)
		}
	}
	if h, _ := r.Hive("hive-1"); !h.LastSeen.Equal(*h0.LastSeen) {
		t.Fatalf("last_seen moved from %v to %v on a refused heartbeat", h0.LastSeen, h.LastSeen)
	}
	if _, err := r.WorkerHeartbeat(workerHB("w-1", "http://hive-1:9100", t0)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.WorkerHeartbeat(workerHB("w-1", "http://hive-1:9100", t0)); !errors.Is(err, ErrNotNewer) {
		t.Fatalf("repeated worker heartbeat: %v, want ErrNotNewer", err)
	}
	if _, err := r.WorkerHeartbeat(workerHB("w-1", "http://hive-1:9100", time.Time{})); !errors.Is(err, ErrNoTimestamps) {
		t.Fatalf("worker heartbeat without timestamp: %v", err)
	}
	if _, err := r.HiveHeartbeat(hiveHB(t0.Add(time.Second), "w-1")); err != nil {
		t.Fatalf("newer hive heartbeat: %v", err)
	}
}

func TestLearnedHivesOnlyWhenAllowed(t *testing.T) {
	r, now := boundRegistry(t, Options{})
	hb := api.HiveHeartbeat{HiveID: "hive-9", URL: "http://hive-9:9000", Timestamp: *now}
	if _, err := r.HiveHeartbeat(hb); !errors.Is(err, ErrUnknownHive) {
		t.Fatalf("unknown hive: %v, want ErrUnknownHive", err)
	}
	if _, ok := r.Hive("hive-9"); ok {
		t.Fatal("refused hive was recorded")
	}
	r2, _ := boundRegistry(t, Options{LearnHives: true})
	if _, err := r2.HiveHeartbeat(hb); err != nil {
		t.Fatalf("learn_hives on: %v", err)
	}
	// Without binding (unit tests of other parts), learning stays on.
	r3 := New(nil, Options{})
	if _, err := r3.HiveHeartbeat(hb); err != nil {
		t.Fatalf("unbound registry: %v", err)
	}
}

func TestStandaloneWorkers(t *testing.T) {
	r, now := boundRegistry(t, Options{})
	hb := api.WorkerHeartbeat{WorkerID: "worker-1", HiveID: "standalone", Model: "m", URL: "http://worker-1:9100", State: api.WorkerReady, Timestamp: *now}
	if _, err := r.WorkerHeartbeat(hb); !errors.Is(err, ErrStandalone) {
		t.Fatalf("standalone without config: %v, want ErrStandalone", err)
	}
	r2, _ := boundRegistry(t, Options{StandaloneHive: "standalone"})
	if _, err := r2.WorkerHeartbeat(hb); err != nil {
		t.Fatalf("configured standalone: %v", err)
	}
	w, _ := r2.Worker("worker-1")
	if !r2.WorkerHost(w) {
		t.Fatal("a registered standalone worker gets no token")
	}
	hb.URL, hb.Timestamp = "http://rogue:9100", now.Add(time.Second)
	if _, err := r2.WorkerHeartbeat(hb); !errors.Is(err, ErrBinding) {
		t.Fatalf("standalone URL change: %v, want ErrBinding", err)
	}
}
