package queen

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/internal/jobs"
	"github.com/rbee-dev/rbee/internal/sse"
)

func TestMain(m *testing.M) {
	if os.Getenv("RBEE_QUEEN_TEST_FAKE_HIVE") == "1" {
		os.Exit(fakeHiveMain(os.Args[1:]))
	}
	// Short keepalives make the idle-stream cut (2× keepalive) testable.
	jobs.KeepaliveInterval = 100 * time.Millisecond
	os.Exit(m.Run())
}

// hiveSpecs are the hive's operations as PROTOCOL.md §4 lists them: a
// forwarded request that still carried hive_id would be rejected.
var hiveSpecs = api.OpSpecs{
	api.OpWorkerSpawn:         {Required: []string{"model", "device"}},
	api.OpWorkerProcessList:   {},
	api.OpWorkerProcessGet:    {Required: []string{"worker_id"}},
	api.OpWorkerProcessDelete: {Required: []string{"worker_id"}},
	api.OpModelDownload:       {Required: []string{"model"}},
	api.OpModelList:           {},
	api.OpModelGet:            {Required: []string{"model"}},
	api.OpModelDelete:         {Required: []string{"model"}},
}

// fakeHive is an rbee-hive's HTTP surface on the real job engine; each
// operation runs the func the test gave it.
type fakeHive struct {
	t      *testing.T
	alias  string
	srv    *httptest.Server
	engine *jobs.Engine
	mu     sync.Mutex
	ops    map[string]jobs.Func
	got    []api.JobRequest
	shut   chan struct{}
}

func (h *fakeHive) Specs() api.OpSpecs { return hiveSpecs }
func (h *fakeHive) Prepare(req api.JobRequest) (jobs.Func, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, req)
	if fn, ok := h.ops[req.Operation]; ok {
		return fn, nil
	}
	return func(ctx context.Context, j *jobs.Job) error {
		j.Narrate(api.Narration{Actor: "hive", Action: req.Operation, Message: "doing " + req.Operation})
		j.Result(map[string]string{"op": req.Operation})
		return nil
	}, nil
}

func (h *fakeHive) on(op string, fn jobs.Func) {
	h.mu.Lock()
	h.ops[op] = fn
	h.mu.Unlock()
}

func (h *fakeHive) requests() []api.JobRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]api.JobRequest(nil), h.got...)
}

func newFakeHive(t *testing.T, alias string) *fakeHive {
	t.Helper()
	h := &fakeHive{t: t, alias: alias, ops: map[string]jobs.Func{}, shut: make(chan struct{})}
	h.engine = jobs.NewEngine(jobs.Options{})
	mux := http.NewServeMux()
	h.engine.Mount(mux, h)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /capabilities", func(w http.ResponseWriter, r *http.Request) {
		jobs.WriteJSON(w, 200, api.Capabilities{HiveID: alias, Devices: []api.Device{
			{ID: "CPU-0", Name: "cpu", DeviceType: "cpu"},
			{ID: "GPU-0", Name: "simulated GPU 0", DeviceType: "gpu", VRAMGB: 24, Simulated: true},
		}})
	})
	var once sync.Once
	mux.HandleFunc("POST /v1/shutdown", func(w http.ResponseWriter, r *http.Request) {
		jobs.WriteJSON(w, 200, api.StatusOK{Status: "ok"})
		once.Do(func() { close(h.shut) })
	})
	h.srv = httptest.NewServer(mux)
	t.Cleanup(func() { h.srv.Close(); _ = h.engine.Close(time.Second) })
	return h
}

func (h *fakeHive) config() config.Hive {
	host, port := splitHostPort(h.t, h.srv.URL)
	return config.Hive{Alias: h.alias, Hostname: host, HivePort: port, SSHPort: 22, SSHUser: "rbee", BinaryPath: "~/.local/bin/rbee-hive"}
}

func splitHostPort(t *testing.T, u string) (string, int) {
	t.Helper()
	host, p, err := net.SplitHostPort(strings.TrimPrefix(u, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return host, n
}

// fakeWorker is an llm-worker-rbee's inference API on the real job engine.
type fakeWorker struct {
	id     string
	srv    *httptest.Server
	engine *jobs.Engine
	// gen produces the tokens; default: max_tokens tokens "t0 t1 …".
	gen  func(ctx context.Context, j *jobs.Job, req api.InferenceRequest) error
	mu   sync.Mutex
	reqs []api.InferenceRequest
	auth []string
}

func newFakeWorker(t *testing.T, id string) *fakeWorker {
	t.Helper()
	w := &fakeWorker{id: id, engine: jobs.NewEngine(jobs.Options{})}
	w.gen = func(ctx context.Context, j *jobs.Job, req api.InferenceRequest) error {
		for i := 0; i < req.MaxTokens; i++ {
			j.Emit(api.EventToken, api.Token{T: fmt.Sprintf(" t%d", i), I: i})
		}
		j.Emit(api.EventEnd, api.End{TokensOut: req.MaxTokens, StopReason: "max_tokens"})
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/inference", func(rw http.ResponseWriter, r *http.Request) {
		body, ok := jobs.ReadJSONBody(rw, r)
		if !ok {
			return
		}
		var req api.InferenceRequest
		if err := json.Unmarshal(body, &req); err != nil {
			jobs.WriteError(rw, 400, api.CodeInvalidRequest, err.Error())
			return
		}
		w.mu.Lock()
		w.reqs = append(w.reqs, req)
		w.auth = append(w.auth, r.Header.Get("Authorization"))
		gen := w.gen
		w.mu.Unlock()
		j := w.engine.Submit("inference", func(ctx context.Context, j *jobs.Job) error { return gen(ctx, j, req) })
		jobs.WriteJSON(rw, 200, api.JobAccepted{JobID: j.ID(), SSEURL: "/v1/inference/" + j.ID() + "/stream"})
	})
	mux.HandleFunc("GET /v1/inference/{id}/stream", func(rw http.ResponseWriter, r *http.Request) {
		w.engine.ServeStream(rw, r, r.PathValue("id"))
	})
	w.srv = httptest.NewServer(mux)
	t.Cleanup(func() { w.srv.Close(); _ = w.engine.Close(time.Second) })
	return w
}

func (w *fakeWorker) requests() []api.InferenceRequest {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]api.InferenceRequest(nil), w.reqs...)
}

// testQueen is a queen on httptest with short timeouts.
type testQueen struct {
	s   *Server
	srv *httptest.Server
	c   *client.Client
	log *logBuf
}

type logBuf struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuf) Logf(format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

// liveTimeout is the queen's HTTP budget in tests: every live fake must
// answer within it however loaded the machine, so it is wide. Tests that
// wait out a peer that never answers set a shorter one: hungPeerTimeout
// where no live peer is involved, and mixedTimeout where a live peer must
// still answer in the same budget (the queen caps probes at 2 s anyway).
const (
	liveTimeout     = 10 * time.Second
	hungPeerTimeout = 400 * time.Millisecond
	mixedTimeout    = 2 * time.Second
)

func testConfig() *config.Queen {
	cfg := config.DefaultQueen()
	cfg.Listen = "127.0.0.1:0"
	cfg.PublicURL = "http://queen.test:8500"
	// A short budget here would turn a slow scheduler into a failure.
	cfg.HTTP.Timeout = config.Duration(liveTimeout)
	cfg.HTTP.Retries = 2
	cfg.Lifecycle.StartTimeout = config.Duration(10 * time.Second)
	cfg.Lifecycle.StopTimeout = config.Duration(3 * time.Second)
	return cfg
}

func newTestQueen(t *testing.T, hives []config.Hive, mutate func(*config.Queen, *Options)) *testQueen {
	t.Helper()
	cfg := testConfig()
	lb := &logBuf{}
	opts := Options{Logf: lb.Logf}
	if mutate != nil {
		mutate(cfg, &opts)
	}
	s, err := New(cfg, hives, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() { _ = s.Close(5 * time.Second); srv.Close() })
	return &testQueen{s: s, srv: srv, c: client.New(srv.URL, client.WithReconnects(0)), log: lb}
}

// run submits req and follows it to its terminator with a deadline.
func (q *testQueen) run(t *testing.T, req api.JobRequest) client.Outcome {
	t.Helper()
	return q.runWithin(t, 30*time.Second, req)
}

// runWithin is run with the deadline d: for jobs whose bound follows from
// the queen's configured budgets rather than a generic 30 s.
func (q *testQueen) runWithin(t *testing.T, d time.Duration, req api.JobRequest) client.Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	out, err := q.c.Run(ctx, req, nil)
	if err != nil {
		t.Fatalf("%s: %v", req.Operation, err)
	}
	return out
}

func narrations(t *testing.T, o client.Outcome) []api.Narration {
	t.Helper()
	var ns []api.Narration
	for _, ev := range o.Events {
		if ev.Name != api.EventNarration {
			continue
		}
		var n api.Narration
		if err := json.Unmarshal([]byte(ev.Data), &n); err != nil {
			t.Fatalf("narration %q: %v", ev.Data, err)
		}
		ns = append(ns, n)
	}
	return ns
}

func wantDone(t *testing.T, o client.Outcome) {
	t.Helper()
	if o.Kind != sse.Done {
		t.Fatalf("ended with %s; want [DONE]; events: %v", o.Terminator(), o.Events)
	}
}

func wantError(t *testing.T, o client.Outcome, parts ...string) {
	t.Helper()
	if o.Kind != sse.Error {
		t.Fatalf("ended with %s; want [ERROR] containing %q", o.Terminator(), parts)
	}
	for _, p := range parts {
		if !strings.Contains(o.Error, p) {
			t.Fatalf("error %q does not contain %q", o.Error, p)
		}
	}
}

// closedPort returns a 127.0.0.1 port with nothing listening.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// blackhole accepts connections and never answers (a hung peer).
func blackhole(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// poll waits for cond with a deadline; cond says what it saw.
func poll(t *testing.T, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %s", within, saw)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeHiveMain is the test binary acting as an rbee-hive started over SSH:
// it serves /health, /capabilities and /v1/shutdown on --port.
func fakeHiveMain(args []string) int {
	port, alias := "", ""
	for i, a := range args {
		next := ""
		if i+1 < len(args) {
			next = args[i+1]
		}
		switch a {
		case "--version":
			fmt.Println("rbee-hive fake")
			return 0
		case "--port":
			port = next
		case "--hive-id":
			alias = next
		}
	}
	fmt.Fprintf(os.Stderr, "fake hive %s on %s, args %v\n", alias, port, args)
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	done := make(chan struct{})
	var once sync.Once
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /capabilities", func(w http.ResponseWriter, r *http.Request) {
		jobs.WriteJSON(w, 200, api.Capabilities{HiveID: alias, Devices: []api.Device{{ID: "CPU-0", DeviceType: "cpu"}}})
	})
	mux.HandleFunc("POST /v1/shutdown", func(w http.ResponseWriter, r *http.Request) {
		if os.Getenv("RBEE_FAKE_HIVE_IGNORE_SHUTDOWN") == "1" {
			jobs.WriteJSON(w, 200, api.StatusOK{Status: "ok"})
			return
		}
		jobs.WriteJSON(w, 200, api.StatusOK{Status: "ok"})
		once.Do(func() { close(done) })
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	// RBEE_FAKE_HIVE_SIGNALS=path: a SIGTERM is written down there (the
	// receiver's own record that it got TERM) before the hive exits.
	term := make(chan os.Signal, 1)
	if os.Getenv("RBEE_FAKE_HIVE_SIGNALS") != "" {
		signal.Notify(term, syscall.SIGTERM)
	}
	select {
	case <-done:
	case <-term:
		_ = os.WriteFile(os.Getenv("RBEE_FAKE_HIVE_SIGNALS"), []byte("TERM\n"), 0o644)
		return 0
	case <-time.After(2 * time.Minute): // never outlive the test run
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	return 0
}

func syscallKill(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}
