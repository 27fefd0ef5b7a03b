package worker

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/model"
	"github.com/rbee-dev/rbee/internal/sse"
)

func testModel() *model.Model {
	m := model.Train(model.Corpus, 3)
	m.Name = "rbee/tiny-ngram:model.bin"
	return m
}

func newTestServer(t *testing.T, mod func(*Config)) (*Server, *httptest.Server) {
	t.Helper()
	cfg := Config{WorkerID: "w-1", ModelPath: "/models/x/model.bin", Device: "cpu:0", TokenDelay: 0, Logf: t.Logf}
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := New(cfg, testModel())
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() { ts.Close(); s.engine.Close(5 * time.Second) })
	return s, ts
}

func post(t *testing.T, url, ctype, body string, hdr map[string]string) (int, api.ErrorBody, api.JobAccepted) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var eb api.ErrorBody
	var acc api.JobAccepted
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(data, &acc); err != nil {
			t.Fatalf("decoding %s: %v", data, err)
		}
	} else if err := json.Unmarshal(data, &eb); err != nil {
		t.Fatalf("error answer is not JSON: %s", data)
	}
	return resp.StatusCode, eb, acc
}

func TestHealth(t *testing.T) {
	_, ts := newTestServer(t, func(c *Config) { c.APIToken = "secret" })
	resp, err := http.Get(ts.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h api.WorkerHealth
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	want := api.WorkerHealth{Status: "ready", WorkerID: "w-1", Model: "rbee/tiny-ngram:model.bin", Device: "cpu:0"}
	if resp.StatusCode != 200 || h != want {
		t.Fatalf("health %d %+v, want %+v (open even with a token)", resp.StatusCode, h, want)
	}
}

func runInference(t *testing.T, ts *httptest.Server, body string) (string, []api.Token, api.End, client.Outcome) {
	t.Helper()
	code, eb, acc := post(t, ts.URL+"/v1/inference", "application/json", body, nil)
	if code != 200 {
		t.Fatalf("submit: %d %s", code, eb.Error.Message)
	}
	if acc.SSEURL != "/v1/inference/"+acc.JobID+"/stream" || !strings.HasPrefix(acc.JobID, "job-") {
		t.Fatalf("accepted %+v", acc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := client.New(ts.URL).FollowPath(ctx, acc.SSEURL, acc.JobID, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var toks []api.Token
	var end api.End
	ends := 0
	for _, ev := range out.Events {
		switch ev.Name {
		case api.EventToken:
			var tk api.Token
			if err := json.Unmarshal([]byte(ev.Data), &tk); err != nil {
				t.Fatal(err)
			}
			toks = append(toks, tk)
		case api.EventEnd:
			ends++
			if err := json.Unmarshal([]byte(ev.Data), &end); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected event %+v", ev)
		}
	}
	if ends != 1 {
		t.Fatalf("%d end events, want 1", ends)
	}
	text, _ := client.Tokens(out)
	return text, toks, end, out
}

func TestInferenceStream(t *testing.T) {
	_, ts := newTestServer(t, nil)
	body := `{"prompt":"Alice was","max_tokens":40,"temperature":0.7,"seed":42,"stop":[]}`
	text, toks, end, out := runInference(t, ts, body)
	if out.Kind != sse.Done {
		t.Fatalf("terminator %s", out.Terminator())
	}
	if len(toks) != 40 || end.TokensOut != 40 || end.StopReason != model.StopMaxTokens {
		t.Fatalf("%d tokens, end %+v", len(toks), end)
	}
	for i, tk := range toks {
		if tk.I != i {
			t.Fatalf("token %d has index %d", i, tk.I)
		}
	}
	again, _, _, _ := runInference(t, ts, body)
	if again != text {
		t.Fatalf("same request, different tokens: %q vs %q", text, again)
	}
	other, _, _, _ := runInference(t, ts, strings.Replace(body, `"seed":42`, `"seed":43`, 1))
	if other == text {
		t.Fatalf("different seeds gave the same 40 tokens %q", text)
	}
	// Optional fields default: temperature 0 (argmax), seed 0, no stop.
	_, _, end, _ = runInference(t, ts, `{"prompt":"the ","max_tokens":3}`)
	if end.TokensOut != 3 {
		t.Fatalf("defaults: %+v", end)
	}
	// A stop sequence ends generation early and is not emitted.
	stopText, _, end, _ := runInference(t, ts, `{"prompt":"Alice","max_tokens":500,"temperature":0.9,"seed":1,"stop":[" "]}`)
	if end.StopReason != model.StopSequence || strings.Contains(stopText, " ") {
		t.Fatalf("stop: %q %+v", stopText, end)
	}
}

func TestInferenceBadInput(t *testing.T) {
	_, ts := newTestServer(t, nil)
	cases := []struct {
		name, ctype, body string
		status            int
		want              string // substring of the error message
	}{
		{"no content type", "", `{"prompt":"a","max_tokens":1}`, 415, "Content-Type"},
		{"text/plain", "text/plain", `{"prompt":"a","max_tokens":1}`, 415, "Content-Type"},
		{"too large", "application/json", `{"prompt":"` + strings.Repeat("a", api.MaxBodyBytes) + `","max_tokens":1}`, 413, "limit"},
		{"malformed", "application/json", `{"prompt":`, 400, "malformed JSON"},
		{"not an object", "application/json", `[1,2]`, 400, "malformed JSON"},
		{"null body", "application/json", `null`, 400, "JSON object"},
		{"missing prompt", "application/json", `{"max_tokens":1}`, 400, `"prompt"`},
		{"null prompt", "application/json", `{"prompt":null,"max_tokens":1}`, 400, `"prompt"`},
		{"missing max_tokens", "application/json", `{"prompt":"a"}`, 400, `"max_tokens"`},
		{"max_tokens 0", "application/json", `{"prompt":"a","max_tokens":0}`, 400, `"max_tokens" must be 1..2048`},
		{"max_tokens 2049", "application/json", `{"prompt":"a","max_tokens":2049}`, 400, `"max_tokens" must be 1..2048`},
		{"max_tokens string", "application/json", `{"prompt":"a","max_tokens":"5"}`, 400, `"max_tokens"`},
		{"max_tokens fraction", "application/json", `{"prompt":"a","max_tokens":1.5}`, 400, `"max_tokens"`},
		{"prompt number", "application/json", `{"prompt":5,"max_tokens":1}`, 400, `"prompt"`},
		{"negative temperature", "application/json", `{"prompt":"a","max_tokens":1,"temperature":-0.1}`, 400, `"temperature"`},
		{"huge temperature", "application/json", `{"prompt":"a","max_tokens":1,"temperature":11}`, 400, `"temperature"`},
		{"negative seed", "application/json", `{"prompt":"a","max_tokens":1,"seed":-1}`, 400, `"seed"`},
		{"seed string", "application/json", `{"prompt":"a","max_tokens":1,"seed":"x"}`, 400, `"seed"`},
		{"stop not array", "application/json", `{"prompt":"a","max_tokens":1,"stop":"x"}`, 400, `"stop"`},
		{"empty stop entry", "application/json", `{"prompt":"a","max_tokens":1,"stop":[""]}`, 400, `"stop"[0]`},
		{"too many stops", "application/json", `{"prompt":"a","max_tokens":1,"stop":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}`, 400, `"stop"`},
		{"unknown field", "application/json", `{"prompt":"a","max_tokens":1,"top_p":0.9}`, 400, `unknown field "top_p"`},
		{"trailing data", "application/json", `{"prompt":"a","max_tokens":1} {}`, 400, "malformed JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, eb, _ := post(t, ts.URL+"/v1/inference", tc.ctype, tc.body, nil)
			if code != tc.status || !strings.Contains(eb.Error.Message, tc.want) {
				t.Fatalf("got %d %q, want %d containing %q", code, eb.Error.Message, tc.status, tc.want)
			}
		})
	}
}

func TestAuth(t *testing.T) {
	_, ts := newTestServer(t, func(c *Config) { c.APIToken = "s3cret" })
	body := `{"prompt":"a","max_tokens":2}`
	for _, tc := range []struct {
		name   string
		header string
		status int
	}{
		{"no header", "", 401},
		{"wrong token", "Bearer nope", 401},
		{"wrong scheme", "Basic s3cret", 401},
		{"right token", "Bearer s3cret", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tc.header != "" {
				hdr["Authorization"] = tc.header
			}
			code, eb, _ := post(t, ts.URL+"/v1/inference", "application/json", body, hdr)
			if code != tc.status || (code == 401 && eb.Error.Code != api.CodeUnauthorized) {
				t.Fatalf("got %d %+v, want %d", code, eb, tc.status)
			}
		})
	}
	// The stream and status endpoints need the token too.
	_, _, acc := post(t, ts.URL+"/v1/inference", "application/json", body, map[string]string{"Authorization": "Bearer s3cret"})
	for _, path := range []string{acc.SSEURL, "/v1/inference/" + acc.JobID} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("GET %s without token: %d", path, resp.StatusCode)
		}
	}
	out, err := client.New(ts.URL, client.WithToken("s3cret")).FollowPath(context.Background(), acc.SSEURL, acc.JobID, 0, nil)
	if err != nil || out.Kind != sse.Done {
		t.Fatalf("follow with token: %v %s", err, out.Terminator())
	}
}

func doReq(t *testing.T, method, url string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestStatusAndCancel(t *testing.T) {
	s, ts := newTestServer(t, func(c *Config) { c.TokenDelay = 20 * time.Millisecond })
	_, _, acc := post(t, ts.URL+"/v1/inference", "application/json", `{"prompt":"a","max_tokens":2048,"temperature":1,"seed":3}`, nil)
	code, b := doReq(t, http.MethodGet, ts.URL+"/v1/inference/"+acc.JobID)
	var st api.JobStatus
	if err := json.Unmarshal(b, &st); err != nil || code != 200 || st.State != api.StateRunning || st.JobID != acc.JobID {
		t.Fatalf("status %d %s", code, b)
	}
	// Wait (with a deadline) until a few tokens were streamed, then cancel.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seen := 0
	done := make(chan client.Outcome, 1)
	cancelled := make(chan struct{})
	go func() {
		out, _ := client.New(ts.URL).FollowPath(ctx, acc.SSEURL, acc.JobID, 0, func(ev sse.Event) error {
			if ev.Name == api.EventToken {
				seen++
				if seen == 3 {
					close(cancelled)
				}
			}
			return nil
		})
		done <- out
	}()
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Fatal("no tokens streamed")
	}
	if s.State() != api.WorkerBusy {
		t.Fatalf("state while generating = %s, want busy", s.State())
	}
	code, b = doReq(t, http.MethodDelete, ts.URL+"/v1/inference/"+acc.JobID)
	if code != 200 || !strings.Contains(string(b), `"cancelled"`) {
		t.Fatalf("cancel: %d %s", code, b)
	}
	out := <-done
	if out.Kind != sse.Cancelled {
		t.Fatalf("terminator %s, want [CANCELLED]", out.Terminator())
	}
	last := out.Events[len(out.Events)-1]
	if last.Name != api.EventEnd || !strings.Contains(last.Data, `"stop_reason":"cancelled"`) {
		t.Fatalf("last event %+v", last)
	}
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{http.MethodDelete, "/v1/inference/" + acc.JobID, 409},
		{http.MethodDelete, "/v1/inference/job-nope", 404},
		{http.MethodGet, "/v1/inference/job-nope", 404},
		{http.MethodGet, "/v1/inference/job-nope/stream", 404},
		{http.MethodGet, "/v1/nothing", 404},
		{http.MethodPut, "/v1/inference", 405},
		{http.MethodPost, "/health", 405},
	} {
		if code, b := doReq(t, tc.method, ts.URL+tc.path); code != tc.status {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, code, b, tc.status)
		}
	}
	if s.State() != api.WorkerReady {
		t.Fatalf("state after cancel = %s", s.State())
	}
}

func TestConfigValidate(t *testing.T) {
	base := func() Config { return Config{WorkerID: "w", ModelPath: "m.bin"} }
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no worker id", func(c *Config) { c.WorkerID = " " }, "--worker-id"},
		{"no model", func(c *Config) { c.ModelPath = "" }, "--model"},
		{"bad device", func(c *Config) { c.Device = "tpu:0" }, "--device"},
		{"device without index", func(c *Config) { c.Device = "cpu" }, "--device"},
		{"port too big", func(c *Config) { c.Port = 70000 }, "--port"},
		{"negative interval", func(c *Config) { c.HeartbeatInterval = -time.Second }, "--heartbeat-interval"},
		{"negative delay", func(c *Config) { c.TokenDelay = -1 }, "--token-delay"},
		{"queen url no scheme", func(c *Config) { c.QueenURL = "queen:8500" }, "--queen-url"},
		{"advertise url garbage", func(c *Config) { c.AdvertiseURL = "::" }, "--advertise-url"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mod(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want mention of %s", err, tc.want)
			}
		})
	}
	c := base()
	if err := c.Validate(); err != nil || c.Device != "cpu:0" || c.HeartbeatInterval != DefaultHeartbeatInterval || c.ListenHost != "0.0.0.0" {
		t.Fatalf("defaults: %v %+v", err, c)
	}
}

func TestResolveModelID(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.bin")
	m := testModel()
	if got := ResolveModelID("", path, m); got != m.Name {
		t.Fatalf("from model name: %s", got)
	}
	os.WriteFile(filepath.Join(dir, "metadata.json"), []byte(`{"id":"org/repo:model.bin","size":1}`), 0o644)
	if got := ResolveModelID("", path, m); got != "org/repo:model.bin" {
		t.Fatalf("from metadata: %s", got)
	}
	if got := ResolveModelID("explicit", path, m); got != "explicit" {
		t.Fatalf("explicit: %s", got)
	}
	if got := ResolveModelID("", "/nowhere/m.bin", &model.Model{}); got != "/nowhere/m.bin" {
		t.Fatalf("fallback: %s", got)
	}
}

// fakeQueen records worker heartbeats.
type fakeQueen struct {
	mu     sync.Mutex
	beats  []api.WorkerHeartbeat
	status int
}

func (q *fakeQueen) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/worker-heartbeat" || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "bad request", 400)
		return
	}
	var hb api.WorkerHeartbeat
	if err := json.NewDecoder(r.Body).Decode(&hb); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	q.mu.Lock()
	q.beats = append(q.beats, hb)
	status := q.status
	q.mu.Unlock()
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"status":"ok"}`))
}

func (q *fakeQueen) last() (api.WorkerHeartbeat, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.beats) == 0 {
		return api.WorkerHeartbeat{}, 0
	}
	return q.beats[len(q.beats)-1], len(q.beats)
}

// awaitBeat polls until the queen has seen a heartbeat satisfying ok.
func awaitBeat(t *testing.T, q *fakeQueen, what string, ok func(api.WorkerHeartbeat, int) bool) api.WorkerHeartbeat {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if hb, n := q.last(); n > 0 && ok(hb, n) {
			return hb
		}
		time.Sleep(10 * time.Millisecond)
	}
	hb, n := q.last()
	t.Fatalf("no heartbeat %s within 10s (last of %d: %+v)", what, n, hb)
	return hb
}

func writeModel(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.bin")
	if err := testModel().Save(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// The worker heartbeats its advertised URL every interval, reports busy
// while generating, and on shutdown sends "stopping", cancels the running
// generation ([CANCELLED] reaches the reader) and returns nil.
func TestHeartbeatAndGracefulShutdown(t *testing.T) {
	q := &fakeQueen{}
	qs := httptest.NewServer(q)
	defer qs.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{WorkerID: "w-7", ModelPath: writeModel(t), Device: "gpu:1", QueenURL: qs.URL, HiveID: "hive-1",
		AdvertiseURL: "http://worker-7:9100", HeartbeatInterval: 50 * time.Millisecond, TokenDelay: 10 * time.Millisecond, Logf: t.Logf}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(cfg.ModelPath)
	if err != nil {
		t.Fatal(err)
	}
	s := New(cfg, m)
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	defer stop()

	hb := awaitBeat(t, q, "ready", func(hb api.WorkerHeartbeat, _ int) bool { return hb.State == api.WorkerReady })
	want := api.WorkerHeartbeat{WorkerID: "w-7", HiveID: "hive-1", Model: "rbee/tiny-ngram:model.bin", Device: "gpu:1", URL: "http://worker-7:9100", State: "ready"}
	hb.Timestamp = time.Time{}
	if hb != want {
		t.Fatalf("heartbeat %+v, want %+v", hb, want)
	}
	_, n0 := q.last()
	awaitBeat(t, q, "repeated", func(_ api.WorkerHeartbeat, n int) bool { return n >= n0+2 })

	base := "http://" + ln.Addr().String()
	c := client.New(base)
	var acc api.JobAccepted
	if err := c.Do(context.Background(), http.MethodPost, "/v1/inference", api.InferenceRequest{Prompt: "x", MaxTokens: 2048, Temperature: 1}, &acc); err != nil {
		t.Fatal(err)
	}
	awaitBeat(t, q, "busy", func(hb api.WorkerHeartbeat, _ int) bool { return hb.State == api.WorkerBusy })

	followed := make(chan client.Outcome, 1)
	firstTok := make(chan struct{})
	var once sync.Once
	go func() {
		out, err := c.FollowPath(context.Background(), acc.SSEURL, acc.JobID, 0, func(sse.Event) error {
			once.Do(func() { close(firstTok) })
			return nil
		})
		if err != nil {
			t.Errorf("follow: %v", err)
		}
		followed <- out
	}()
	<-firstTok
	start := time.Now()
	stop()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10s of shutdown")
	}
	t.Logf("graceful shutdown took %s", time.Since(start))
	if out := <-followed; out.Kind != sse.Cancelled {
		t.Fatalf("running job ended %s, want [CANCELLED]", out.Terminator())
	}
	if hb, _ := q.last(); hb.State != api.WorkerStopping {
		t.Fatalf("last heartbeat state %s, want stopping", hb.State)
	}
}

// A queen that fails or is gone never blocks serving.
func TestHeartbeatFailureDoesNotBlock(t *testing.T) {
	q := &fakeQueen{status: 500}
	qs := httptest.NewServer(q)
	defer qs.Close()
	for _, queen := range []string{qs.URL, "http://127.0.0.1:1"} {
		t.Run(queen, func(t *testing.T) {
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			cfg := Config{WorkerID: "w", ModelPath: "m", QueenURL: queen, AdvertiseURL: "http://w:1", HeartbeatInterval: 20 * time.Millisecond, Logf: t.Logf}
			cfg.Validate()
			s := New(cfg, testModel())
			if err := s.Heartbeat(context.Background(), api.WorkerReady); err == nil {
				t.Fatal("heartbeat to a failing queen reported success")
			}
			ctx, stop := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- s.Serve(ctx, ln) }()
			h, err := client.New("http://" + ln.Addr().String()).Health(context.Background())
			if err != nil || !strings.Contains(h, `"ready"`) {
				t.Fatalf("health while queen fails: %v %s", err, h)
			}
			stop()
			if err := <-served; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRunFailsFast(t *testing.T) {
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.bin")
	os.WriteFile(corrupt, []byte("RBEENGRM garbage"), 0o644)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	busyPort := ln.Addr().(*net.TCPAddr).Port
	good := writeModel(t)
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing model", Config{WorkerID: "w", ModelPath: filepath.Join(dir, "nope.bin")}, "no such file"},
		{"corrupt model", Config{WorkerID: "w", ModelPath: corrupt}, corrupt},
		{"port in use", Config{WorkerID: "w", ModelPath: good, ListenHost: "127.0.0.1", Port: busyPort}, "listen"},
		{"invalid config", Config{ModelPath: good}, "--worker-id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := Run(ctx, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want mention of %q", err, tc.want)
			}
		})
	}
}

func TestDefaultAdvertiseNeverLocalhost(t *testing.T) {
	u := defaultAdvertise(9100)
	if strings.Contains(u, "localhost") || strings.Contains(u, "127.0.0.1") || !strings.HasSuffix(u, ":9100") {
		t.Fatalf("default advertise URL %s", u)
	}
}

func BenchmarkInference(b *testing.B) {
	cfg := Config{WorkerID: "w", ModelPath: "m"}
	cfg.Validate()
	s := New(cfg, testModel())
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	c := client.New(ts.URL)
	for b.Loop() {
		var acc api.JobAccepted
		if err := c.Do(context.Background(), http.MethodPost, "/v1/inference", api.InferenceRequest{Prompt: "a", MaxTokens: 100, Temperature: 0.8}, &acc); err != nil {
			b.Fatal(err)
		}
		if _, err := c.FollowPath(context.Background(), acc.SSEURL, acc.JobID, 0, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "tokens/s")
}
