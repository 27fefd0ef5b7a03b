package hive

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/model"
)

// workerBin is the real llm-worker-rbee built by TestMain.
var workerBin string

// hiveBin is the rbee-hive binary built by TestMain.
var hiveBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rbee-hive-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := os.Stat("../../cmd/llm-worker-rbee/main.go"); err != nil {
		// The spawn tests need the real worker; a move must not turn them
		// into silent skips.
		fmt.Fprintf(os.Stderr, "cmd/llm-worker-rbee not found: %v\n", err)
		os.Exit(1)
	} else {
		out := filepath.Join(dir, "llm-worker-rbee")
		cmd := exec.Command("go", "build", "-o", out, "../../cmd/llm-worker-rbee")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building llm-worker-rbee: %v\n%s", err, b)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		workerBin = out
	}
	// The hive binary goes beside the worker, so its default
	// --worker-binary (next to rbee-hive) finds it.
	hb := exec.Command("go", "build", "-o", filepath.Join(dir, "rbee-hive"), "../../cmd/rbee-hive")
	hb.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := hb.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building rbee-hive: %v\n%s", err, b)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	hiveBin = filepath.Join(dir, "rbee-hive")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needWorker(t *testing.T) {
	t.Helper()
	if workerBin == "" {
		t.Fatal("TestMain did not build llm-worker-rbee")
	}
}

// ngramModel is a real model file the worker can load.
func ngramModel(t *testing.T) []byte {
	t.Helper()
	b, err := model.Train(model.Corpus, 3).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hiveWithModel starts a hive whose catalog holds testModel (downloaded
// through the job API from a test hub).
func hiveWithModel(t *testing.T, mutate func(*Config)) (*Server, string, *testLog) {
	t.Helper()
	_, hub := newTestHub(t, map[string][]byte{"/rbee/tiny/resolve/main/model.bin": ngramModel(t)})
	s, srv, lg := newTestHive(t, func(c *Config) {
		c.HFEndpoint = hub.URL
		c.WorkerBinary = workerBin
		if mutate != nil {
			mutate(c)
		}
	})
	if evs := run(t, srv.URL, map[string]any{"operation": "model_download", "model": testModel}); term(evs) != api.TermDone {
		t.Fatalf("download: %v", evs)
	}
	return s, srv.URL, lg
}

func processGone(pid int) bool {
	// The hive reaps its children, so a stopped worker's pid is gone.
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

func TestSpawnListDeleteRealWorker(t *testing.T) {
	needWorker(t)
	var mu sync.Mutex
	var beats []api.WorkerHeartbeat
	queen := http.NewServeMux()
	queen.HandleFunc("POST /v1/worker-heartbeat", func(w http.ResponseWriter, r *http.Request) {
		var hb api.WorkerHeartbeat
		_ = json.NewDecoder(r.Body).Decode(&hb)
		mu.Lock()
		beats = append(beats, hb)
		mu.Unlock()
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	queen.HandleFunc("POST /v1/hive-heartbeat", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	qsrv := newHTTPTestServer(t, queen)
	s, base, _ := hiveWithModel(t, func(c *Config) { c.QueenURL = qsrv })

	evs := run(t, base, map[string]any{"operation": "worker_spawn", "model": testModel, "device": "gpu:1", "hive_id": "hive-1"})
	if term(evs) != api.TermDone {
		t.Fatalf("spawn: %v", evs)
	}
	w := result[api.WorkerProcess](t, evs)
	cfg := s.Config()
	if !strings.HasPrefix(w.WorkerID, "w-") || w.PID <= 0 || w.Port < cfg.WorkerPortMin || w.Port > cfg.WorkerPortMax ||
		w.URL != fmt.Sprintf("http://hive-1.test:%d", w.Port) || w.Device != "gpu:1" || w.Model != testModel || w.State != ChildRunning {
		t.Fatalf("worker = %+v", w)
	}
	if len(narrations(t, evs)) < 3 {
		t.Fatalf("narrations: %v", evs)
	}
	// The worker really serves, with the model id from the catalog.
	code, body := do(t, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/health", w.Port))
	var h api.WorkerHealth
	if code != 200 || json.Unmarshal(body, &h) != nil || h.Status != "ready" || h.WorkerID != w.WorkerID || h.Model != testModel || h.Device != "gpu:1" {
		t.Fatalf("worker health = %d %s", code, body)
	}
	// Its log is under <data-dir>/logs.
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "logs", w.WorkerID+".log")); err != nil {
		t.Fatal(err)
	}
	// It heartbeats to the queen with the advertised URL the hive gave it.
	waitFor(t, "worker heartbeat", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, b := range beats {
			if b.WorkerID == w.WorkerID && b.HiveID == "hive-1" && b.URL == w.URL {
				return true
			}
		}
		return false
	})
	if hb := s.heartbeat(); len(hb.Workers) != 1 || hb.Workers[0] != w.WorkerID {
		t.Fatalf("hive heartbeat workers = %v", hb.Workers)
	}

	// A second worker gets another port.
	evs = run(t, base, map[string]any{"operation": "worker_spawn", "model": testModel, "device": "cpu:0"})
	w2 := result[api.WorkerProcess](t, evs)
	if w2.Port == w.Port || w2.WorkerID == w.WorkerID {
		t.Fatalf("second worker %+v clashes with %+v", w2, w)
	}

	evs = run(t, base, map[string]any{"operation": "worker_process_list"})
	wl := result[api.WorkerList](t, evs)
	if len(wl.Workers) != 2 || wl.Workers[0].WorkerID != w.WorkerID || wl.Workers[1].WorkerID != w2.WorkerID {
		t.Fatalf("list = %+v", wl)
	}
	evs = run(t, base, map[string]any{"operation": "worker_process_get", "worker_id": w.WorkerID})
	if g := result[api.WorkerProcess](t, evs); g.PID != w.PID || g.State != ChildRunning {
		t.Fatalf("get = %+v", g)
	}

	evs = run(t, base, map[string]any{"operation": "worker_process_delete", "worker_id": w.WorkerID})
	if term(evs) != api.TermDone {
		t.Fatalf("delete: %v", evs)
	}
	d := result[api.WorkerProcess](t, evs)
	if d.State != ChildExited || d.ExitCode == nil {
		t.Fatalf("deleted = %+v", d)
	}
	if !processGone(w.PID) {
		t.Fatalf("pid %d still exists after delete", w.PID)
	}
	evs = run(t, base, map[string]any{"operation": "worker_process_list"})
	if wl := result[api.WorkerList](t, evs); len(wl.Workers) != 1 || wl.Workers[0].WorkerID != w2.WorkerID {
		t.Fatalf("list after delete = %+v", wl)
	}

	// A worker that dies on its own shows up as exited with its code.
	if err := syscall.Kill(w2.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "exited state", 10*time.Second, func() bool {
		evs := run(t, base, map[string]any{"operation": "worker_process_get", "worker_id": w2.WorkerID})
		g := result[api.WorkerProcess](t, evs)
		return g.State == ChildExited && g.ExitCode != nil && *g.ExitCode == 128+int(syscall.SIGKILL)
	})
	if hb := s.heartbeat(); len(hb.Workers) != 0 {
		t.Fatalf("exited worker still in heartbeat: %v", hb.Workers)
	}
}

func newHTTPTestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := newServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestCloseStopsWorkers(t *testing.T) {
	needWorker(t)
	s, base, _ := hiveWithModel(t, nil)
	evs := run(t, base, map[string]any{"operation": "worker_spawn", "model": testModel, "device": "cpu:0"})
	w := result[api.WorkerProcess](t, evs)
	start := time.Now()
	s.Close()
	if !processGone(w.PID) {
		t.Fatalf("worker pid %d survived Close", w.PID)
	}
	t.Logf("Close stopped the worker in %s", time.Since(start))
}

// script writes an executable shell script standing in for the worker.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fake-worker")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSpawnFailures(t *testing.T) {
	cases := []struct {
		name    string
		binary  func(t *testing.T) string
		timeout time.Duration
		want    []string
	}{
		{"exits at once", func(t *testing.T) string { return script(t, `echo "cannot load model: boom" >&2; exit 3`) },
			10 * time.Second, []string{"exited with code 3 before it became healthy", "cannot load model: boom", ".log"}},
		{"never healthy", func(t *testing.T) string { return script(t, `echo "thinking" >&2; exec sleep 60`) },
			500 * time.Millisecond, []string{"was not healthy within 500ms", "thinking"}},
		{"missing binary", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") },
			time.Second, []string{"worker binary", "no such file"}},
		{"not executable", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "w")
			_ = os.WriteFile(p, []byte("x"), 0o644)
			return p
		}, time.Second, []string{"not an executable file"}},
		{"not in PATH", func(t *testing.T) string { return "llm-worker-rbee-does-not-exist" },
			time.Second, []string{"not found next to rbee-hive or in $PATH"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bin := tc.binary(t)
			s, base, _ := hiveWithModelBinary(t, bin, tc.timeout)
			evs := run(t, base, map[string]any{"operation": "worker_spawn", "model": testModel, "device": "cpu:0"})
			got := term(evs)
			if !strings.HasPrefix(got, "[ERROR] ") {
				t.Fatalf("terminator = %q", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("terminator %q lacks %q", got, w)
				}
			}
			if ws := s.Workers(); len(ws) != 0 {
				t.Fatalf("failed spawn left %+v in the table", ws)
			}
			s.mu.Lock()
			reserved := len(s.reserved)
			s.mu.Unlock()
			if reserved != 0 {
				t.Fatalf("%d ports still reserved", reserved)
			}
		})
	}
}

func hiveWithModelBinary(t *testing.T, bin string, timeout time.Duration) (*Server, string, *testLog) {
	_, hub := newTestHub(t, map[string][]byte{"/rbee/tiny/resolve/main/model.bin": []byte("not really a model")})
	s, srv, lg := newTestHive(t, func(c *Config) {
		c.HFEndpoint = hub.URL
		c.WorkerBinary = bin
		c.SpawnTimeout = timeout
		c.StopGrace = 500 * time.Millisecond
	})
	if evs := run(t, srv.URL, map[string]any{"operation": "model_download", "model": testModel}); term(evs) != api.TermDone {
		t.Fatalf("download: %v", evs)
	}
	return s, srv.URL, lg
}

func TestSpawnCancelKillsWorker(t *testing.T) {
	// A worker that ignores SIGTERM and never gets healthy: cancelling the
	// job must still kill it (SIGKILL after the grace period).
	pidFile := filepath.Join(t.TempDir(), "pid")
	bin := script(t, `echo $$ > `+pidFile+`; trap "" TERM; while :; do sleep 0.1; done`)
	s, base, _ := hiveWithModelBinary(t, bin, time.Minute)
	id := submit(t, base, map[string]any{"operation": "worker_spawn", "model": testModel, "device": "cpu:0"})
	var pid int
	waitFor(t, "fake worker to start", 10*time.Second, func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		_, err = fmt.Sscan(string(b), &pid)
		return err == nil
	})
	// The script may write its pid before the hive has entered it in the
	// table (cmd.Start has not returned yet).
	waitFor(t, "child in table", 10*time.Second, func() bool { return len(s.Workers()) == 1 })
	if ws := s.Workers(); len(ws) != 1 || ws[0].State != ChildStarting || ws[0].PID != pid {
		t.Fatalf("table during spawn = %+v", ws)
	}
	code, body := do(t, http.MethodDelete, base+"/v1/jobs/"+id)
	if code != 200 {
		t.Fatalf("cancel = %d %s", code, body)
	}
	if got := term(stream(t, base, id)); got != api.TermCancelled {
		t.Fatalf("terminator = %q", got)
	}
	if !processGone(pid) {
		t.Fatalf("fake worker %d survived the cancel", pid)
	}
	if ws := s.Workers(); len(ws) != 0 {
		t.Fatalf("table after cancel = %+v", ws)
	}
}
