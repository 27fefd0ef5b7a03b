package hive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/sse"
)

const testModel = "rbee/tiny:model.bin"

// testHub serves files by path with X-Checksum-Sha256 and Range support;
// a path in block makes the handler send half, then wait.
type testHub struct {
	mu      sync.Mutex
	files   map[string][]byte
	block   chan struct{}
	reached chan struct{}
}

func (h *testHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	data, ok := h.files[r.URL.Path]
	block, reached := h.block, h.reached
	h.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	sum := sha256.Sum256(data)
	w.Header().Set("X-Checksum-Sha256", hex.EncodeToString(sum[:]))
	start := 0
	if rg := r.Header.Get("Range"); rg != "" {
		start, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(data)-1, len(data)))
		w.Header().Set("Content-Length", strconv.Itoa(len(data)-start))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	}
	body := data[start:]
	if block != nil {
		half := len(body) / 2
		_, _ = w.Write(body[:half])
		w.(http.Flusher).Flush()
		close(reached)
		select {
		case <-block:
		case <-r.Context().Done():
			return
		}
		body = body[half:]
	}
	_, _ = w.Write(body)
}

func newTestHub(t *testing.T, files map[string][]byte) (*testHub, *httptest.Server) {
	h := &testHub{files: files}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv
}

type testLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *testLog) Logf(format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *testLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func testConfig(t *testing.T) Config {
	base := freePortBase(t)
	return Config{
		WorkerPortMax:     base + 19,
		HiveID:            "hive-1",
		Port:              0,
		DataDir:           t.TempDir(),
		GPUs:              2,
		HeartbeatInterval: 50 * time.Millisecond,
		HFEndpoint:        "http://127.0.0.1:1",
		WorkerPortMin:     base,
		SpawnTimeout:      15 * time.Second,
		StopGrace:         2 * time.Second,
		AdvertiseURL:      "http://hive-1.test:9000",
	}
}

// freePortBase finds a port p such that p..p+19 are free right now. It
// looks below Linux's ephemeral range (32768+), where other tests' client
// connections would make ports come and go.
func freePortBase(t *testing.T) int {
	t.Helper()
	for try := 0; try < 200; try++ {
		p := 20000 + rand.IntN(12000)
		ok := true
		for q := p; q < p+20; q++ {
			l, err := net.Listen("tcp", ":"+strconv.Itoa(q))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return p
		}
	}
	t.Fatal("no free port range")
	return 0
}

func newTestHive(t *testing.T, mutate func(*Config)) (*Server, *httptest.Server, *testLog) {
	t.Helper()
	cfg := testConfig(t)
	lg := &testLog{}
	cfg.Logf = lg.Logf
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		srv.CloseClientConnections()
		s.Close()
		srv.Close()
		if t.Failed() {
			t.Logf("hive log:\n%s", lg)
		}
	})
	return s, srv, lg
}

var httpClient = &http.Client{Timeout: 60 * time.Second}

func post(t *testing.T, url, ctype, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func do(t *testing.T, method, url string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// submit posts a job and returns its id; it fails the test unless 200.
func submit(t *testing.T, base string, req map[string]any) string {
	t.Helper()
	b, _ := json.Marshal(req)
	code, body := post(t, base+"/v1/jobs", "application/json", string(b))
	if code != http.StatusOK {
		t.Fatalf("submit %s: %d %s", b, code, body)
	}
	var acc api.JobAccepted
	if err := json.Unmarshal(body, &acc); err != nil || !strings.HasPrefix(acc.JobID, "job-") || acc.SSEURL != "/v1/jobs/"+acc.JobID+"/stream" {
		t.Fatalf("accepted = %s (%v)", body, err)
	}
	return acc.JobID
}

// stream reads a job's events up to and including the terminator.
func stream(t *testing.T, base, id string) []sse.Event {
	t.Helper()
	resp, err := httpClient.Get(base + "/v1/jobs/" + id + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %s", resp.Status)
	}
	r := sse.NewReader(resp.Body)
	var evs []sse.Event
	for {
		ev, err := r.Next()
		if err != nil {
			t.Fatalf("stream ended without terminator after %v: %v", evs, err)
		}
		evs = append(evs, ev)
		if ev.IsTerminator() {
			return evs
		}
	}
}

// run submits a job and returns its events.
func run(t *testing.T, base string, req map[string]any) []sse.Event {
	t.Helper()
	return stream(t, base, submit(t, base, req))
}

func term(evs []sse.Event) string { return evs[len(evs)-1].Data }

func result[T any](t *testing.T, evs []sse.Event) T {
	t.Helper()
	var v T
	for _, ev := range evs {
		if ev.Name == api.EventResult {
			if err := json.Unmarshal([]byte(ev.Data), &v); err != nil {
				t.Fatalf("result %s: %v", ev.Data, err)
			}
			return v
		}
	}
	t.Fatalf("no result event in %v", evs)
	return v
}

func narrations(t *testing.T, evs []sse.Event) []api.Narration {
	t.Helper()
	var ns []api.Narration
	for _, ev := range evs {
		if ev.Name == api.EventNarration {
			var n api.Narration
			if err := json.Unmarshal([]byte(ev.Data), &n); err != nil {
				t.Fatal(err)
			}
			if n.Actor != "hive" || n.Hive != "hive-1" || n.Action == "" || n.Message == "" {
				t.Fatalf("bad narration %+v", n)
			}
			ns = append(ns, n)
		}
	}
	return ns
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHealthAndCapabilities(t *testing.T) {
	_, srv, _ := newTestHive(t, nil)
	code, body := do(t, http.MethodGet, srv.URL+"/health")
	if code != 200 || string(body) != "ok" {
		t.Fatalf("health = %d %q", code, body)
	}
	code, body = do(t, http.MethodGet, srv.URL+"/capabilities")
	if code != 200 {
		t.Fatalf("capabilities = %d %s", code, body)
	}
	var caps api.Capabilities
	if err := json.Unmarshal(body, &caps); err != nil {
		t.Fatal(err)
	}
	if caps.HiveID != "hive-1" || len(caps.Devices) != 3 {
		t.Fatalf("caps = %+v", caps)
	}
	cpu := caps.Devices[0]
	if cpu.ID != "CPU-0" || cpu.DeviceType != "cpu" || cpu.Simulated || cpu.Name == "" {
		t.Fatalf("cpu = %+v", cpu)
	}
	for i, d := range caps.Devices[1:] {
		want := api.Device{ID: fmt.Sprintf("GPU-%d", i), Name: fmt.Sprintf("simulated GPU %d", i), DeviceType: "gpu", VRAMGB: 24, Simulated: true}
		if d != want {
			t.Fatalf("gpu %d = %+v, want %+v", i, d, want)
		}
	}
	if !strings.Contains(string(body), `"simulated":false`) {
		t.Fatalf("simulated:false must be on the wire: %s", body)
	}
	code, _ = do(t, http.MethodGet, srv.URL+"/nope")
	if code != 404 {
		t.Fatalf("unknown path = %d", code)
	}
}

func TestJobRequestBadInput(t *testing.T) {
	_, srv, _ := newTestHive(t, nil)
	big := `{"operation":"model_list","x":"` + strings.Repeat("a", api.MaxBodyBytes) + `"}`
	cases := []struct {
		name, ctype, body string
		code              int
		want              string
	}{
		{"malformed json", "application/json", `{"operation":`, 400, "malformed JSON"},
		{"not an object", "application/json", `[1,2]`, 400, "malformed JSON"},
		{"missing operation", "application/json", `{}`, 400, `missing field "operation"`},
		{"unknown operation", "application/json", `{"operation":"fly"}`, 400, `unknown operation "fly"`},
		{"queen-only operation", "application/json", `{"operation":"infer","model":"a/b:c","prompt":"x"}`, 400, `unknown operation "infer"`},
		{"unknown field", "application/json", `{"operation":"model_list","colour":"red"}`, 400, `unknown field "colour"`},
		{"missing model", "application/json", `{"operation":"model_download"}`, 400, `missing field "model"`},
		{"empty model", "application/json", `{"operation":"model_get","model":" "}`, 400, `must not be empty`},
		{"ill-typed model", "application/json", `{"operation":"model_get","model":7}`, 400, `field "model" must be string`},
		{"missing device", "application/json", `{"operation":"worker_spawn","model":"a/b:c"}`, 400, `missing field "device"`},
		{"missing worker_id", "application/json", `{"operation":"worker_process_get"}`, 400, `missing field "worker_id"`},
		{"bad model id", "application/json", `{"operation":"model_download","model":"../../etc:passwd"}`, 400, `invalid model id "../../etc:passwd"`},
		{"model id without file", "application/json", `{"operation":"worker_spawn","model":"a/b","device":"cpu:0"}`, 400, `invalid model id`},
		{"unknown device", "application/json", `{"operation":"worker_spawn","model":"a/b:c","device":"gpu:7"}`, 400, `unknown device "gpu:7" on hive-1; valid devices: cpu:0, gpu:0, gpu:1`},
		{"device garbage", "application/json", `{"operation":"worker_spawn","model":"a/b:c","device":"GPU-0"}`, 400, `unknown device "GPU-0"`},
		{"second cpu", "application/json", `{"operation":"worker_spawn","model":"a/b:c","device":"cpu:1"}`, 400, `unknown device "cpu:1"`},
		{"hive_id mismatch", "application/json", `{"operation":"model_list","hive_id":"hive-2"}`, 400, `hive_id "hive-2" does not match this hive (hive-1)`},
		{"hive_id mismatch spawn", "application/json", `{"operation":"worker_spawn","hive_id":"hive-9","model":"a/b:c","device":"cpu:0"}`, 400, `does not match`},
		{"trailing data", "application/json", `{"operation":"model_list"} {}`, 400, "malformed JSON"},
		{"no content type", "", `{"operation":"model_list"}`, 415, "Content-Type must be application/json"},
		{"wrong content type", "text/plain", `{"operation":"model_list"}`, 415, "Content-Type must be application/json"},
		{"too large", "application/json", big, 413, "over the limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(t, srv.URL+"/v1/jobs", tc.ctype, tc.body)
			if code != tc.code {
				t.Fatalf("code = %d, want %d (%s)", code, tc.code, body)
			}
			var eb api.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil {
				t.Fatalf("error body %s: %v", body, err)
			}
			if !strings.Contains(eb.Error.Message, tc.want) || eb.Error.Code == "" {
				t.Fatalf("error = %+v, want message containing %q", eb.Error, tc.want)
			}
		})
	}
}

func TestMatchingHiveIDAccepted(t *testing.T) {
	_, srv, _ := newTestHive(t, nil)
	evs := run(t, srv.URL, map[string]any{"operation": "model_list", "hive_id": "hive-1"})
	if term(evs) != api.TermDone {
		t.Fatalf("events = %v", evs)
	}
}

func TestUnknownJobAndCancelAfterFinish(t *testing.T) {
	_, srv, _ := newTestHive(t, nil)
	for _, m := range []struct{ method, path string }{
		{http.MethodGet, "/v1/jobs/job-nope"},
		{http.MethodGet, "/v1/jobs/job-nope/stream"},
		{http.MethodDelete, "/v1/jobs/job-nope"},
	} {
		code, body := do(t, m.method, srv.URL+m.path)
		if code != 404 || !strings.Contains(string(body), `"not_found"`) {
			t.Errorf("%s %s = %d %s", m.method, m.path, code, body)
		}
	}
	id := submit(t, srv.URL, map[string]any{"operation": "worker_process_list"})
	evs := stream(t, srv.URL, id)
	if term(evs) != api.TermDone {
		t.Fatalf("events %v", evs)
	}
	if wl := result[api.WorkerList](t, evs); wl.Workers == nil || len(wl.Workers) != 0 {
		t.Fatalf("worker list = %+v (want an empty, non-null list)", wl)
	}
	code, body := do(t, http.MethodDelete, srv.URL+"/v1/jobs/"+id)
	if code != 409 {
		t.Fatalf("cancel after finish = %d %s", code, body)
	}
	code, body = do(t, http.MethodGet, srv.URL+"/v1/jobs/"+id)
	var st api.JobStatus
	if code != 200 || json.Unmarshal(body, &st) != nil || st.State != api.StateCompleted || st.Operation != "worker_process_list" {
		t.Fatalf("status = %d %s", code, body)
	}
}

func TestRuntimeErrors(t *testing.T) {
	_, srv, _ := newTestHive(t, nil)
	cases := []struct {
		req  map[string]any
		want string
	}{
		{map[string]any{"operation": "worker_spawn", "model": "rbee/absent:model.bin", "device": "gpu:1"},
			"[ERROR] model rbee/absent:model.bin is not on hive-1; run model_download first"},
		{map[string]any{"operation": "worker_process_get", "worker_id": "w-nope"}, "[ERROR] worker w-nope is not on hive-1"},
		{map[string]any{"operation": "worker_process_delete", "worker_id": "w-nope"}, "[ERROR] worker w-nope is not on hive-1"},
		{map[string]any{"operation": "model_get", "model": "rbee/absent:model.bin"}, "[ERROR] model rbee/absent:model.bin is not on hive-1"},
		{map[string]any{"operation": "model_delete", "model": "rbee/absent:model.bin"}, "[ERROR] model rbee/absent:model.bin is not on hive-1"},
		{map[string]any{"operation": "model_download", "model": "rbee/absent:model.bin"}, "[ERROR] hive-1: downloading rbee/absent:model.bin"},
	}
	for _, tc := range cases {
		evs := run(t, srv.URL, tc.req)
		if got := term(evs); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%v: terminator %q, want prefix %q", tc.req, got, tc.want)
		}
	}
}

func modelBytes() []byte {
	b := make([]byte, 40_000)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func TestModelOperations(t *testing.T) {
	data := modelBytes()
	_, hub := newTestHub(t, map[string][]byte{"/rbee/tiny/resolve/main/model.bin": data})
	_, srv, _ := newTestHive(t, func(c *Config) { c.HFEndpoint = hub.URL })

	evs := run(t, srv.URL, map[string]any{"operation": "model_download", "model": testModel})
	if term(evs) != api.TermDone {
		t.Fatalf("download: %v", evs)
	}
	m := result[api.Model](t, evs)
	sum := sha256.Sum256(data)
	if m.ID != testModel || m.Size != int64(len(data)) || m.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("model = %+v", m)
	}
	ns := narrations(t, evs)
	var sawProgress bool
	for _, n := range ns {
		if n.Action == "download_progress" && strings.Contains(n.Message, "100%") {
			sawProgress = true
		}
	}
	if !sawProgress || len(ns) < 3 {
		t.Fatalf("narrations = %+v", ns)
	}

	// Downloading again is a no-op that still returns the model.
	evs = run(t, srv.URL, map[string]any{"operation": "model_download", "model": testModel, "hive_id": "hive-1"})
	if term(evs) != api.TermDone || result[api.Model](t, evs).SHA256 != m.SHA256 || !strings.Contains(narrations(t, evs)[0].Message, "already") {
		t.Fatalf("second download: %v", evs)
	}

	evs = run(t, srv.URL, map[string]any{"operation": "model_list"})
	if ml := result[api.ModelList](t, evs); len(ml.Models) != 1 || ml.Models[0].ID != testModel {
		t.Fatalf("list = %+v", ml)
	}
	evs = run(t, srv.URL, map[string]any{"operation": "model_get", "model": testModel})
	if g := result[api.Model](t, evs); g.SHA256 != m.SHA256 || g.Path == "" {
		t.Fatalf("get = %+v", g)
	}
	evs = run(t, srv.URL, map[string]any{"operation": "model_delete", "model": testModel})
	if term(evs) != api.TermDone || result[api.Model](t, evs).ID != testModel {
		t.Fatalf("delete: %v", evs)
	}
	evs = run(t, srv.URL, map[string]any{"operation": "model_list"})
	if ml := result[api.ModelList](t, evs); ml.Models == nil || len(ml.Models) != 0 {
		t.Fatalf("list after delete = %+v", ml)
	}
}

func TestModelDownloadCancelAndResume(t *testing.T) {
	data := modelBytes()
	h, hub := newTestHub(t, map[string][]byte{"/rbee/tiny/resolve/main/model.bin": data})
	h.block, h.reached = make(chan struct{}), make(chan struct{})
	s, srv, _ := newTestHive(t, func(c *Config) { c.HFEndpoint = hub.URL })

	id := submit(t, srv.URL, map[string]any{"operation": "model_download", "model": testModel})
	select {
	case <-h.reached:
	case <-time.After(10 * time.Second):
		t.Fatal("hub never reached the middle")
	}
	partial := filepath.Join(s.Catalog().Dir(), "rbee--tiny--model.bin", "model.bin.partial")
	waitFor(t, "partial file", 10*time.Second, func() bool {
		st, err := os.Stat(partial)
		return err == nil && st.Size() == int64(len(data)/2)
	})
	code, body := do(t, http.MethodDelete, srv.URL+"/v1/jobs/"+id)
	if code != 200 || !strings.Contains(string(body), `"cancelled"`) {
		t.Fatalf("cancel = %d %s", code, body)
	}
	if got := term(stream(t, srv.URL, id)); got != api.TermCancelled {
		t.Fatalf("terminator = %q", got)
	}
	close(h.block)
	h.mu.Lock()
	h.block = nil
	h.mu.Unlock()
	evs := run(t, srv.URL, map[string]any{"operation": "model_list"})
	if ml := result[api.ModelList](t, evs); len(ml.Models) != 0 {
		t.Fatalf("partial listed: %+v", ml)
	}
	evs = run(t, srv.URL, map[string]any{"operation": "model_download", "model": testModel})
	if term(evs) != api.TermDone {
		t.Fatalf("resume: %v", evs)
	}
	var resumed bool
	for _, n := range narrations(t, evs) {
		if n.Action == "download_resume" && strings.Contains(n.Message, strconv.Itoa(len(data)/2)) {
			resumed = true
		}
	}
	if !resumed {
		t.Fatalf("no resume narration in %v", evs)
	}
}

func TestHeartbeats(t *testing.T) {
	var mu sync.Mutex
	var beats []api.HiveHeartbeat
	queen := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/hive-heartbeat" || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad", 400)
			return
		}
		var hb api.HiveHeartbeat
		if err := json.NewDecoder(r.Body).Decode(&hb); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		beats = append(beats, hb)
		mu.Unlock()
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	}))
	defer queen.Close()
	cfg := testConfig(t)
	cfg.QueenURL = queen.URL + "/"
	lg := &testLog{}
	cfg.Logf = lg.Logf
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	waitFor(t, "3 heartbeats", 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(beats) >= 3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	hb := beats[0]
	mu.Unlock()
	if hb.HiveID != "hive-1" || hb.URL != "http://hive-1.test:9000" || len(hb.Devices) != 3 || hb.Workers == nil || hb.Timestamp.IsZero() {
		t.Fatalf("heartbeat = %+v", hb)
	}
}

func TestHeartbeatFailureDoesNotBlock(t *testing.T) {
	// A queen that accepts the connection and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	cfg := testConfig(t)
	cfg.QueenURL = "http://" + ln.Addr().String()
	lg := &testLog{}
	cfg.Logf = lg.Logf
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, hln) }()
	base := "http://" + hln.Addr().String()
	code, _ := do(t, http.MethodGet, base+"/health")
	if code != 200 {
		t.Fatalf("health = %d", code)
	}
	waitFor(t, "heartbeat failure logged", 10*time.Second, func() bool { return strings.Contains(lg.String(), "heartbeat to") })
	start := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("shutdown took %s", d)
	}
}

func TestShutdownEndpoint(t *testing.T) {
	cfg := testConfig(t)
	cfg.Logf = (&testLog{}).Logf
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), ln) }()
	base := "http://" + ln.Addr().String()
	// A running job is cancelled by the shutdown.
	id := submit(t, base, map[string]any{"operation": "model_list"})
	_ = id
	code, body := post(t, base+"/v1/shutdown", "", "")
	if code != 200 || !bytes.Contains(body, []byte(`"ok"`)) {
		t.Fatalf("shutdown = %d %s", code, body)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after /v1/shutdown")
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("still accepting after shutdown")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"empty hive id", func(c *Config) { c.HiveID = "" }, "hive id is empty"},
		{"bad hive id", func(c *Config) { c.HiveID = "../x" }, "invalid hive id"},
		{"bad range", func(c *Config) { c.WorkerPortMin, c.WorkerPortMax = 9200, 9100 }, "invalid worker port range"},
		{"gpus", func(c *Config) { c.GPUs = -1 }, "gpus -1"},
		{"queen url", func(c *Config) { c.QueenURL = "queen:8500" }, "invalid queen url"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "data dir is empty"},
	}
	for _, tc := range cases {
		cfg := testConfig(t)
		tc.mutate(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestAllocatePort(t *testing.T) {
	base := freePortBase(t)
	s, _, _ := newTestHive(t, func(c *Config) {
		c.Port = base // the hive's own port is in the range
		c.WorkerPortMin, c.WorkerPortMax = base, base+3
	})
	busy, err := net.Listen("tcp", ":"+strconv.Itoa(base+1))
	if err != nil {
		t.Skipf("cannot occupy port %d: %v", base+1, err)
	}
	defer busy.Close()
	p1, err := s.allocatePort()
	if err != nil || p1 != base+2 {
		t.Fatalf("first port = %d, %v; want %d (own port and busy port skipped)", p1, err, base+2)
	}
	p2, err := s.allocatePort()
	if err != nil || p2 != base+3 {
		t.Fatalf("second port = %d, %v; want %d (reserved port skipped)", p2, err, base+3)
	}
	if _, err := s.allocatePort(); err == nil || !strings.Contains(err.Error(), "no free port in the worker range") {
		t.Fatalf("exhausted range: %v", err)
	}
	s.releasePort(p1)
	if p, err := s.allocatePort(); err != nil || p != p1 {
		t.Fatalf("after release = %d %v", p, err)
	}
}

func TestLogTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "w.log")
	_ = os.WriteFile(p, []byte("a\n\nb\nc\nd\ne\nf\n"), 0o644)
	if got := logTail(p, 3); got != "d | e | f" {
		t.Fatalf("tail = %q", got)
	}
	if got := logTail(filepath.Join(t.TempDir(), "none"), 3); !strings.Contains(got, "no log") {
		t.Fatalf("tail = %q", got)
	}
}

func newServer(h http.Handler) *httptest.Server { return httptest.NewServer(h) }
