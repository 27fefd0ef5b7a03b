package keeper

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/jobs"
)

// fakeQueen is a queen made of the real job engine and a dispatcher whose
// behaviour the prompt or alias selects.
type fakeQueen struct {
	engine *jobs.Engine
	mu     sync.Mutex
	reqs   []api.JobRequest
	// dropAfterTokens > 0: the first stream connection is cut after this
	// many token events.
	dropAfterTokens int
	streams         []string // Last-Event-ID of each stream request
	ignoreCancel    bool     // answer DELETE 200 but leave the job running
	cancels         int
}

func (q *fakeQueen) Specs() api.OpSpecs { return api.QueenOps }

func (q *fakeQueen) Prepare(req api.JobRequest) (jobs.Func, error) {
	q.mu.Lock()
	q.reqs = append(q.reqs, req)
	q.mu.Unlock()
	if req.Alias == "nosuch" || req.HiveID == "nosuch" {
		return nil, &api.RequestError{Msg: "unknown hive \"nosuch\""}
	}
	return func(ctx context.Context, j *jobs.Job) error {
		j.Narrate(api.Narration{Actor: "queen", Action: req.Operation, Message: "working on " + req.Operation, Hive: req.HiveID})
		switch {
		case req.Alias == "broken" || req.Prompt == "fail":
			return fmt.Errorf("hive-1 (http://hive-1:9000): connection refused")
		case req.Prompt == "cancel-me":
			return jobs.ErrCancelled
		case req.Operation == api.OpInfer:
			delay := time.Millisecond
			if req.Prompt == "slow" {
				delay = 20 * time.Millisecond
			}
			for i := 0; i < req.MaxTokens; i++ {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(delay):
				}
				j.Emit(api.EventToken, api.Token{T: string(rune('a' + i%26)), I: i})
			}
			j.Emit(api.EventEnd, api.End{TokensOut: req.MaxTokens, StopReason: "max_tokens"})
		default:
			j.Result(map[string]any{"operation": req.Operation, "ok": true})
		}
		return nil
	}, nil
}

// cancelled counts the jobs the queen ended with [CANCELLED].
func (q *fakeQueen) cancelled() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.cancels
}

func (q *fakeQueen) lastReq() api.JobRequest {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.reqs) == 0 {
		return api.JobRequest{}
	}
	return q.reqs[len(q.reqs)-1]
}

// dropWriter aborts the connection after n token events.
type dropWriter struct {
	http.ResponseWriter
	left int
}

func (d *dropWriter) Write(p []byte) (int, error) {
	n, err := d.ResponseWriter.Write(p)
	if bytes.Contains(p, []byte("event: token")) {
		d.left--
		if d.left == 0 {
			http.NewResponseController(d.ResponseWriter).Flush()
			panic(http.ErrAbortHandler)
		}
	}
	return n, err
}

func (d *dropWriter) Flush() { http.NewResponseController(d.ResponseWriter).Flush() }

func newQueen(t *testing.T, mod func(*fakeQueen)) (*fakeQueen, *httptest.Server) {
	t.Helper()
	q := &fakeQueen{engine: jobs.NewEngine(jobs.Options{Logf: t.Logf})}
	if mod != nil {
		mod(q)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/jobs/{id}/stream", func(w http.ResponseWriter, r *http.Request) {
		q.mu.Lock()
		first := len(q.streams) == 0
		q.streams = append(q.streams, r.Header.Get("Last-Event-ID"))
		drop := q.dropAfterTokens
		q.mu.Unlock()
		if first && drop > 0 {
			w = &dropWriter{ResponseWriter: w, left: drop}
		}
		q.engine.ServeStream(w, r, r.PathValue("id"))
	})
	mux.HandleFunc("DELETE /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		if q.ignoreCancel {
			jobs.WriteJSON(w, 200, api.CancelAnswer{JobID: r.PathValue("id"), State: api.StateCancelled})
			return
		}
		q.engine.ServeCancel(w, r.PathValue("id"))
		if j, ok := q.engine.Get(r.PathValue("id")); ok && j.State() == api.StateCancelled {
			q.mu.Lock()
			q.cancels++
			q.mu.Unlock()
		}
	})
	inner := http.NewServeMux()
	q.engine.Mount(inner, q)
	mux.Handle("/", inner)
	mux.HandleFunc("GET /v1/workers", func(w http.ResponseWriter, r *http.Request) {
		jobs.WriteJSON(w, 200, []api.WorkerInfo{{WorkerID: "w-1", HiveID: "hive-1", State: "ready"}})
	})
	mux.HandleFunc("GET /v1/hives", func(w http.ResponseWriter, r *http.Request) {
		jobs.WriteJSON(w, 200, []api.HiveInfo{{Alias: "hive-1", State: "online"}})
	})
	ts := httptest.NewServer(mux)
	t.Cleanup(func() { ts.Close(); q.engine.Close(2 * time.Second) })
	return q, ts
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a poller.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func run(t *testing.T, queen string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := args
	if queen != "" {
		full = append([]string{"--queen", queen}, args...)
	}
	code := Main(ctx, full, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "missing command"},
		{"unknown command", []string{"fly"}, `unknown command "fly"`},
		{"unknown global flag", []string{"--nope", "status"}, "flag provided but not defined: -nope"},
		{"unknown command flag", []string{"status", "--verbose"}, "flag provided but not defined: -verbose"},
		{"status with argument", []string{"status", "now"}, `status takes no arguments, got "now"`},
		{"hive without subcommand", []string{"hive"}, "hive: missing subcommand"},
		{"hive unknown subcommand", []string{"hive", "fly", "-a", "x"}, `hive: unknown subcommand "fly"`},
		{"hive start without alias", []string{"hive", "start"}, "hive start: missing -a ALIAS"},
		{"hive start two aliases", []string{"hive", "start", "-a", "x", "y"}, `unexpected argument "y"`},
		{"hive list with argument", []string{"hive", "list", "x"}, "hive list takes no arguments"},
		{"force on start", []string{"hive", "start", "-a", "x", "--force"}, "flag provided but not defined: -force"},
		{"worker spawn without hive", []string{"worker", "spawn", "--model", "m"}, "worker spawn: missing --hive H"},
		{"worker spawn without model", []string{"worker", "spawn", "--hive", "h"}, "worker spawn: missing --model M"},
		{"worker get without id", []string{"worker", "get", "--hive", "h"}, "worker get: missing WORKER_ID"},
		{"model download without model", []string{"model", "download", "--hive", "h"}, "model download: missing MODEL"},
		{"model list without hive", []string{"model", "list"}, "model list: missing --hive H"},
		{"infer without model", []string{"infer", "hello"}, "infer: missing --model M"},
		{"infer without prompt", []string{"infer", "--model", "m"}, "infer: missing PROMPT"},
		{"infer bad max-tokens", []string{"infer", "--model", "m", "--max-tokens", "ten", "hi"}, `invalid value "ten" for flag -max-tokens`},
		{"infer max-tokens too big", []string{"infer", "--model", "m", "--max-tokens", "5000", "hi"}, "--max-tokens 5000 out of range 1..2048"},
		{"infer negative seed", []string{"infer", "--model", "m", "--seed", "-1", "hi"}, "-seed"},
		{"infer negative temperature", []string{"infer", "--model", "m", "--temperature", "-1", "hi"}, "--temperature -1"},
		{"bad queen url", []string{"--queen", "queen:8500", "status"}, `--queen "queen:8500"`},
		{"negative reconnects", []string{"--reconnects", "-1", "status"}, "--reconnects"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(t, "", tc.args...)
			if code != ExitUsage || !strings.Contains(errs, tc.want) || out != "" {
				t.Fatalf("exit %d, stderr %q, stdout %q; want 2 and %q", code, errs, out, tc.want)
			}
			if !strings.Contains(errs, "rbee-keeper help") {
				t.Fatalf("usage error does not point to help: %q", errs)
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}, {"infer", "-h"}} {
		code, out, _ := run(t, "", args...)
		if code != 0 || !strings.Contains(out, "usage: rbee-keeper") {
			t.Fatalf("%v: exit %d, %q", args, code, out)
		}
	}
	code, out, _ := run(t, "", "--version")
	if code != 0 || !strings.HasPrefix(out, "rbee-keeper ") || strings.Count(out, "\n") != 1 {
		t.Fatalf("--version: %d %q", code, out)
	}
}

// Every command line becomes the job request PROTOCOL.md names.
func TestCommandsToRequests(t *testing.T) {
	q, ts := newQueen(t, nil)
	f := func(v float64) *float64 { return &v }
	u := func(v uint64) *uint64 { return &v }
	cases := []struct {
		args []string
		want api.JobRequest
	}{
		{[]string{"status"}, api.JobRequest{Operation: "status"}},
		{[]string{"hive", "list"}, api.JobRequest{Operation: "hive_list"}},
		{[]string{"hive", "get", "-a", "hive-1"}, api.JobRequest{Operation: "hive_get", Alias: "hive-1"}},
		{[]string{"hive", "status", "--alias", "hive-1"}, api.JobRequest{Operation: "hive_status", Alias: "hive-1"}},
		{[]string{"hive", "install", "-a", "hive-1", "--force"}, api.JobRequest{Operation: "hive_install", Alias: "hive-1", Force: true}},
		{[]string{"hive", "uninstall", "hive-2"}, api.JobRequest{Operation: "hive_uninstall", Alias: "hive-2"}},
		{[]string{"hive", "start", "-a", "hive-1"}, api.JobRequest{Operation: "hive_start", Alias: "hive-1"}},
		{[]string{"hive", "stop", "-a", "hive-1"}, api.JobRequest{Operation: "hive_stop", Alias: "hive-1"}},
		{[]string{"hive", "refresh", "-a", "hive-1"}, api.JobRequest{Operation: "hive_refresh_capabilities", Alias: "hive-1"}},
		{[]string{"worker", "spawn", "--hive", "hive-1", "--model", "rbee/tiny-ngram:model.bin", "--device", "gpu:1"},
			api.JobRequest{Operation: "worker_spawn", HiveID: "hive-1", Model: "rbee/tiny-ngram:model.bin", Device: "gpu:1"}},
		{[]string{"worker", "spawn", "--hive", "hive-1", "--model", "m"}, api.JobRequest{Operation: "worker_spawn", HiveID: "hive-1", Model: "m", Device: "cpu:0"}},
		{[]string{"worker", "list", "--hive", "hive-1"}, api.JobRequest{Operation: "worker_process_list", HiveID: "hive-1"}},
		{[]string{"worker", "get", "--hive", "hive-1", "w-1"}, api.JobRequest{Operation: "worker_process_get", HiveID: "hive-1", WorkerID: "w-1"}},
		{[]string{"worker", "delete", "w-2", "--hive", "hive-1"}, api.JobRequest{Operation: "worker_process_delete", HiveID: "hive-1", WorkerID: "w-2"}},
		{[]string{"model", "download", "--hive", "hive-1", "rbee/ngram-4:model.bin"}, api.JobRequest{Operation: "model_download", HiveID: "hive-1", Model: "rbee/ngram-4:model.bin"}},
		{[]string{"model", "list", "--hive", "hive-1"}, api.JobRequest{Operation: "model_list", HiveID: "hive-1"}},
		{[]string{"model", "get", "--hive", "hive-1", "a/b:c"}, api.JobRequest{Operation: "model_get", HiveID: "hive-1", Model: "a/b:c"}},
		{[]string{"model", "delete", "--hive=hive-1", "--model", "a/b:c"}, api.JobRequest{Operation: "model_delete", HiveID: "hive-1", Model: "a/b:c"}},
		{[]string{"infer", "--model", "m", "hello", "world"}, api.JobRequest{Operation: "infer", Model: "m", Prompt: "hello world", MaxTokens: DefaultMaxTokens}},
		{[]string{"infer", "--model", "m", "--hive", "hive-2", "--max-tokens", "5", "--temperature", "0.7", "--seed", "42", "--", "-dash prompt"},
			api.JobRequest{Operation: "infer", Model: "m", HiveID: "hive-2", Prompt: "-dash prompt", MaxTokens: 5, Temperature: f(0.7), Seed: u(42)}},
		{[]string{"infer", "hi", "--model", "m", "--temperature", "0"}, api.JobRequest{Operation: "infer", Model: "m", Prompt: "hi", MaxTokens: DefaultMaxTokens, Temperature: f(0)}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, errs := run(t, ts.URL, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			if got := q.lastReq(); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("request %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	_, ts := newQueen(t, nil)
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"done with result", []string{"hive", "get", "-a", "hive-1"}, 0, `"operation": "hive_get"`, "[queen] hive_get: working on hive_get"},
		{"done with tokens", []string{"infer", "--model", "m", "--max-tokens", "5", "hi"}, 0, "abcde\n", "[end] 5 tokens, stop reason max_tokens"},
		{"error terminator", []string{"hive", "start", "-a", "broken"}, 1, "", "failed: hive-1 (http://hive-1:9000): connection refused"},
		{"cancelled terminator", []string{"infer", "--model", "m", "cancel-me"}, 130, "", "cancelled"},
		{"rejected by queen", []string{"hive", "start", "-a", "nosuch"}, 2, "", `the queen rejected the request: unknown hive "nosuch"`},
		{"narration names the hive", []string{"model", "list", "--hive", "hive-1"}, 0, `"ok": true`, "[hive-1/queen] model_list"},
		{"workers registry", []string{"workers"}, 0, `"worker_id": "w-1"`, ""},
		{"hives registry", []string{"hives"}, 0, `"alias": "hive-1"`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(t, ts.URL, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errs, tc.stderr) {
				t.Fatalf("exit %d\nstdout %q\nstderr %q\nwant %d, %q, %q", code, out, errs, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

func TestQueenUnreachable(t *testing.T) {
	_, ts := newQueen(t, nil)
	url := ts.URL
	ts.Close()
	for _, args := range [][]string{{"status"}, {"workers"}} {
		code, _, errs := run(t, url, args...)
		if code != ExitError || !strings.Contains(errs, url) {
			t.Fatalf("%v: exit %d, %q", args, code, errs)
		}
	}
}

func TestQueenFromEnv(t *testing.T) {
	q, ts := newQueen(t, nil)
	t.Setenv(QueenEnv, ts.URL)
	if code, _, errs := run(t, "", "status"); code != 0 || q.lastReq().Operation != "status" {
		t.Fatalf("exit %d: %s", code, errs)
	}
	// --queen wins over the environment.
	t.Setenv(QueenEnv, "http://127.0.0.1:1")
	if code, _, errs := run(t, ts.URL, "status"); code != 0 {
		t.Fatalf("--queen did not override %s: %d %s", QueenEnv, code, errs)
	}
}

func TestJSONOutput(t *testing.T) {
	_, ts := newQueen(t, nil)
	code, out, errs := run(t, ts.URL, "--json", "infer", "--model", "m", "--max-tokens", "3", "hi")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var evs []jsonEvent
	for _, l := range lines {
		var e jsonEvent
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		evs = append(evs, e)
	}
	names := []string{}
	for _, e := range evs {
		names = append(names, e.Event)
	}
	if got := strings.Join(names, ","); got != "narration,token,token,token,end," {
		t.Fatalf("events %s", got)
	}
	last := evs[len(evs)-1]
	if string(last.Data) != `"[DONE]"` || last.ID != len(evs) {
		t.Fatalf("terminator line %+v", last)
	}
	var tok api.Token
	if err := json.Unmarshal(evs[1].Data, &tok); err != nil || tok.T != "a" || tok.I != 0 {
		t.Fatalf("token data %s", evs[1].Data)
	}
	// An [ERROR] terminator is a JSON string too.
	code, out, _ = run(t, ts.URL, "--json", "hive", "start", "-a", "broken")
	if code != 1 || !strings.Contains(out, `"data":"[ERROR] hive-1 (http://hive-1:9000): connection refused"`) {
		t.Fatalf("error in --json: %d %q", code, out)
	}
}

// A stream that drops mid-way is resumed with Last-Event-ID: every token
// arrives exactly once.
func TestReconnectMidStream(t *testing.T) {
	q, ts := newQueen(t, func(q *fakeQueen) { q.dropAfterTokens = 4 })
	code, out, errs := run(t, ts.URL, "infer", "--model", "m", "--max-tokens", "10", "hi")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if out != "abcdefghij\n" {
		t.Fatalf("tokens %q, want each of 10 exactly once", out)
	}
	q.mu.Lock()
	streams := append([]string(nil), q.streams...)
	q.mu.Unlock()
	// Events: 1 narration, tokens 2..; the cut comes after the 4th token (id 5).
	if len(streams) < 2 || streams[0] != "" || streams[1] != "5" {
		t.Fatalf("stream requests with Last-Event-ID %q, want [\"\" \"5\" ...]", streams)
	}
	if !strings.Contains(errs, "stream resumed 1 time") {
		t.Fatalf("stderr does not mention the resume: %q", errs)
	}
}

// waitFor polls until cond holds or fails after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Ctrl-C cancels the job on the queen and exits 130 once [CANCELLED]
// arrives.
func TestInterruptCancelsJob(t *testing.T) {
	q, ts := newQueen(t, nil)
	var out, errb syncBuffer
	ctx, interrupt := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"--queen", ts.URL, "infer", "--model", "m", "--max-tokens", "2048", "slow"}, &out, &errb)
	}()
	waitFor(t, "some tokens", func() bool { return len(out.String()) >= 3 })
	interrupt()
	var code int
	select {
	case code = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("keeper did not exit after Ctrl-C")
	}
	if code != ExitCancelled {
		t.Fatalf("exit %d, want 130; stderr %q", code, errb.String())
	}
	if !strings.Contains(errb.String(), "interrupted; cancelling job") || !strings.Contains(errb.String(), "cancelled") {
		t.Fatalf("stderr %q", errb.String())
	}
	// The job really was cancelled on the queen, not just abandoned.
	// (The DELETE handler may finish just after the keeper has exited.)
	waitFor(t, "the queen to record the cancel", func() bool { return q.cancelled() == 1 })
}

// When the queen never confirms the cancel, the keeper still exits 130
// after CancelGrace.
func TestInterruptGrace(t *testing.T) {
	old := CancelGrace
	CancelGrace = 200 * time.Millisecond
	t.Cleanup(func() { CancelGrace = old })
	_, ts := newQueen(t, func(q *fakeQueen) { q.ignoreCancel = true })
	var out, errb syncBuffer
	ctx, interrupt := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"--queen", ts.URL, "infer", "--model", "m", "--max-tokens", "2048", "slow"}, &out, &errb)
	}()
	waitFor(t, "some tokens", func() bool { return len(out.String()) >= 2 })
	interrupt()
	select {
	case code := <-done:
		if code != ExitCancelled || !strings.Contains(errb.String(), "no [CANCELLED] within") {
			t.Fatalf("exit %d, stderr %q", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("keeper did not give up after the grace period")
	}
}
