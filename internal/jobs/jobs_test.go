package jobs

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
)

// dispatcher runs a few test operations.
type dispatcher struct{ release chan struct{} }

func (d *dispatcher) Specs() api.OpSpecs {
	return api.OpSpecs{"status": {}, "model_get": {Required: []string{"model"}}, "infer": {Required: []string{"model", "prompt"}, Optional: []string{"max_tokens"}}}
}

func (d *dispatcher) Prepare(req api.JobRequest) (Func, error) {
	switch req.Operation {
	case "status":
		return func(ctx context.Context, j *Job) error {
			j.Narrate(api.Narration{Actor: "test", Action: "status", Message: "fine"})
			j.Result(map[string]int{"n": 1})
			return nil
		}, nil
	case "model_get":
		if req.Model == "bad" {
			return nil, &api.RequestError{Msg: "model id \"bad\" is invalid"}
		}
		return func(ctx context.Context, j *Job) error { return fmt.Errorf("model %s is not on hive-1", req.Model) }, nil
	default: // infer: emits max_tokens tokens, then waits for release or cancel
		return func(ctx context.Context, j *Job) error {
			for i := 0; i < req.MaxTokens; i++ {
				j.Emit(api.EventToken, api.Token{T: "x", I: i})
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-d.release:
				return nil
			}
		}, nil
	}
}

func newServer(t *testing.T) (*Engine, *dispatcher, *client.Client) {
	t.Helper()
	e := NewEngine(Options{})
	d := &dispatcher{release: make(chan struct{})}
	mux := http.NewServeMux()
	e.Mount(mux, d)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { srv.Close(); e.Close(5 * time.Second) })
	return e, d, client.New(srv.URL)
}

func TestJobSucceedsWithOneDone(t *testing.T) {
	_, _, c := newServer(t)
	ctx := context.Background()
	out, err := c.Run(ctx, api.JobRequest{Operation: "status"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Kind != sse.Done || len(out.Events) != 2 || out.Events[0].Name != "narration" || out.Events[1].Name != "result" {
		t.Fatalf("outcome %+v", out)
	}
	st, err := c.Job(ctx, out.JobID)
	if err != nil || st.State != api.StateCompleted || st.FinishedAt == nil || st.Operation != "status" {
		t.Fatalf("status %+v %v", st, err)
	}
	// A second reader replays the same events from the start.
	again, err := c.Follow(ctx, out.JobID, 0, nil)
	if err != nil || len(again.Events) != 2 || again.Kind != sse.Done {
		t.Fatalf("replay %+v %v", again, err)
	}
}

func TestJobFailureIsErrorTerminator(t *testing.T) {
	_, _, c := newServer(t)
	out, err := c.Run(context.Background(), api.JobRequest{Operation: "model_get", Model: "a/b:c"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Kind != sse.Error || out.Error != "model a/b:c is not on hive-1" {
		t.Fatalf("outcome %+v", out)
	}
	st, _ := c.Job(context.Background(), out.JobID)
	if st.State != api.StateFailed || st.Error != out.Error {
		t.Fatalf("status %+v", st)
	}
}

func TestCancelReachesWorkAndConflictsAfter(t *testing.T) {
	_, _, c := newServer(t)
	ctx := context.Background()
	acc, err := c.Submit(ctx, api.JobRequest{Operation: "infer", Model: "m", Prompt: "p", MaxTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	ans, err := c.Cancel(ctx, acc.JobID)
	if err != nil || ans.State != api.StateCancelled {
		t.Fatalf("cancel %+v %v", ans, err)
	}
	out, err := c.Follow(ctx, acc.JobID, 0, nil)
	if err != nil || out.Kind != sse.Cancelled {
		t.Fatalf("outcome %+v %v", out, err)
	}
	if _, err := c.Cancel(ctx, acc.JobID); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("second cancel: %v, want 409", err)
	}
	if _, err := c.Cancel(ctx, "job-nope"); !client.IsStatus(err, http.StatusNotFound) {
		t.Fatalf("unknown cancel: %v, want 404", err)
	}
}

func TestResumeWithLastEventID(t *testing.T) {
	_, d, c := newServer(t)
	ctx := context.Background()
	acc, err := c.Submit(ctx, api.JobRequest{Operation: "infer", Model: "m", Prompt: "p", MaxTokens: 50})
	if err != nil {
		t.Fatal(err)
	}
	close(d.release)
	out, err := c.Follow(ctx, acc.JobID, 20, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Events) != 30 || out.Events[0].ID != 21 || out.Kind != sse.Done {
		t.Fatalf("resumed %d events from %d, kind %v", len(out.Events), out.Events[0].ID, out.Kind)
	}
}

func TestManyReadersSeeEverything(t *testing.T) {
	_, d, c := newServer(t)
	ctx := context.Background()
	acc, err := c.Submit(ctx, api.JobRequest{Operation: "infer", Model: "m", Prompt: "p", MaxTokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := c.Follow(ctx, acc.JobID, 0, nil)
			if err == nil && (len(out.Events) != 100 || out.Kind != sse.Done) {
				err = fmt.Errorf("reader saw %d events, %v", len(out.Events), out.Kind)
			}
			errs <- err
		}()
	}
	time.AfterFunc(50*time.Millisecond, func() { close(d.release) })
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestKeepaliveWhileSilent(t *testing.T) {
	old := KeepaliveInterval
	KeepaliveInterval = 20 * time.Millisecond
	defer func() { KeepaliveInterval = old }()
	e, d, c := newServer(t)
	acc, err := c.Submit(context.Background(), api.JobRequest{Operation: "infer", Model: "m", Prompt: "p", MaxTokens: 1})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(c.BaseURL() + acc.SSEURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Read raw lines: the token event, then a keepalive comment while the
	// job is silent, then (after release) the terminator.
	br := bufio.NewReader(resp.Body)
	var sawKeepalive bool
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended early: %v", err)
		}
		if line == ": keepalive\n" && !sawKeepalive {
			sawKeepalive = true
			close(d.release)
		}
		if line == "data: [DONE]\n" {
			break
		}
	}
	if !sawKeepalive {
		t.Fatal("no keepalive comment while the job was silent")
	}
	j, _ := e.Get(acc.JobID)
	<-j.Done()
}

func TestHTTPBadInput(t *testing.T) {
	_, _, c := newServer(t)
	base := c.BaseURL()
	cases := []struct {
		name, method, path, ctype, body string
		status                          int
		want                            string
	}{
		{"malformed", "POST", "/v1/jobs", "application/json", `{"operation"`, 400, "malformed JSON"},
		{"unknown op", "POST", "/v1/jobs", "application/json", `{"operation":"dance"}`, 400, "unknown operation"},
		{"unknown field", "POST", "/v1/jobs", "application/json", `{"operation":"status","x":1}`, 400, `unknown field "x"`},
		{"ill-typed", "POST", "/v1/jobs", "application/json", `{"operation":"infer","model":"m","prompt":"p","max_tokens":"3"}`, 400, `"max_tokens" must be int`},
		{"prepare rejects", "POST", "/v1/jobs", "application/json", `{"operation":"model_get","model":"bad"}`, 400, "invalid"},
		{"no content type", "POST", "/v1/jobs", "", `{"operation":"status"}`, 415, "Content-Type"},
		{"wrong content type", "POST", "/v1/jobs", "text/plain", `{"operation":"status"}`, 415, "text/plain"},
		{"too large", "POST", "/v1/jobs", "application/json", `{"operation":"status","pad":"` + strings.Repeat("x", api.MaxBodyBytes) + `"}`, 413, "limit"},
		{"unknown job", "GET", "/v1/jobs/job-x", "", "", 404, "unknown job"},
		{"unknown stream", "GET", "/v1/jobs/job-x/stream", "", "", 404, "unknown job"},
		{"unknown cancel", "DELETE", "/v1/jobs/job-x", "", "", 404, "unknown job"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var eb api.ErrorBody
			if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil {
				t.Fatalf("answer is not a JSON error: %v", err)
			}
			if resp.StatusCode != tc.status || !strings.Contains(eb.Error.Message, tc.want) || eb.Error.Code == "" {
				t.Fatalf("got %d %+v, want %d containing %q", resp.StatusCode, eb, tc.status, tc.want)
			}
		})
	}
	// A bad Last-Event-ID is a 400, not a stream.
	out, _ := c.Run(context.Background(), api.JobRequest{Operation: "status"}, nil)
	req, _ := http.NewRequest("GET", base+"/v1/jobs/"+out.JobID+"/stream", nil)
	req.Header.Set("Last-Event-ID", "abc")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 400 {
		t.Fatalf("bad Last-Event-ID: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
}

func TestRetentionBoundsJobs(t *testing.T) {
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := NewEngine(Options{MaxJobs: 5, Retention: time.Minute, Now: clock})
	defer e.Close(time.Second)
	var last *Job
	for i := 0; i < 20; i++ {
		last = e.Submit("status", func(ctx context.Context, j *Job) error { return nil })
		<-last.Done()
	}
	if e.Len() > 5 {
		t.Fatalf("kept %d jobs, want at most 5", e.Len())
	}
	if _, ok := e.Get(last.ID()); !ok {
		t.Fatal("newest job was pruned")
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	e.Submit("status", func(ctx context.Context, j *Job) error { return nil })
	if e.Len() != 1 {
		t.Fatalf("after retention: %d jobs kept, want 1", e.Len())
	}
}

func TestPanicBecomesError(t *testing.T) {
	e := NewEngine(Options{})
	defer e.Close(time.Second)
	j := e.Submit("x", func(ctx context.Context, j *Job) error { panic("boom") })
	<-j.Done()
	if st := j.Status(); st.State != api.StateFailed || !strings.Contains(st.Error, "boom") {
		t.Fatalf("status %+v", st)
	}
}

func TestCloseCancelsRunningJobs(t *testing.T) {
	e := NewEngine(Options{})
	j := e.Submit("x", func(ctx context.Context, j *Job) error { <-ctx.Done(); return ctx.Err() })
	if err := e.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if j.State() != api.StateCancelled {
		t.Fatalf("state %s", j.State())
	}
	if _, err := e.Cancel(j.ID(), 0); !errors.Is(err, ErrFinished) {
		t.Fatalf("cancel after close: %v", err)
	}
}

func BenchmarkSubmitToFirstEvent(b *testing.B) {
	e := NewEngine(Options{})
	defer e.Close(time.Second)
	for i := 0; i < b.N; i++ {
		j := e.Submit("x", func(ctx context.Context, j *Job) error { j.Result(1); return nil })
		for {
			evs, notify, _ := j.EventsAfter(0)
			if len(evs) > 0 {
				break
			}
			<-notify
		}
	}
}

// A reader resuming at or past the terminator gets the terminator again
// instead of an empty stream it would reconnect to forever.
func TestResumePastTheEndGetsTheTerminator(t *testing.T) {
	_, _, c := newServer(t)
	ctx := context.Background()
	out, err := c.Run(ctx, api.JobRequest{Operation: "status"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, after := range []int{out.LastID, out.LastID + 5} {
		again, err := c.Follow(ctx, out.JobID, after, nil)
		if err != nil || again.Kind != sse.Done || len(again.Events) != 0 {
			t.Fatalf("resume after %d: %+v %v", after, again, err)
		}
	}
}

// After Close, a submitted job ends [CANCELLED] at once and the HTTP API
// answers 503.
func TestSubmitAfterClose(t *testing.T) {
	e, _, c := newServer(t)
	if err := e.Close(time.Second); err != nil {
		t.Fatal(err)
	}
	j := e.Submit("x", func(ctx context.Context, j *Job) error { t.Error("ran after Close"); return nil })
	<-j.Done()
	if j.State() != api.StateCancelled {
		t.Fatalf("state %s", j.State())
	}
	if _, err := c.Submit(context.Background(), api.JobRequest{Operation: "status"}); !client.IsStatus(err, http.StatusServiceUnavailable) {
		t.Fatalf("submit after close: %v, want 503", err)
	}
}

// A DELETE that races the work's own success still ends [CANCELLED], never
// a panic or a nil error message.
func TestCancelRacingSuccess(t *testing.T) {
	e := NewEngine(Options{})
	defer e.Close(time.Second)
	for i := 0; i < 200; i++ {
		release := make(chan struct{})
		j := e.Submit("x", func(ctx context.Context, j *Job) error { <-release; return nil })
		go close(release)
		_, _ = e.Cancel(j.ID(), 0)
		<-j.Done()
		if st := j.State(); st != api.StateCancelled && st != api.StateCompleted {
			t.Fatalf("state %s", st)
		}
	}
}

// A cancel whose work does not stop within CancelWait is answered 202 with
// the true state; the stream still ends [CANCELLED] once it stops.
func TestSlowCancelIsAccepted(t *testing.T) {
	old := CancelWait
	CancelWait = 20 * time.Millisecond
	defer func() { CancelWait = old }()
	e := NewEngine(Options{})
	defer e.Close(time.Second)
	mux := http.NewServeMux()
	release := make(chan struct{})
	e.Mount(mux, slowOps{release})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := client.New(srv.URL)
	acc, err := c.Submit(context.Background(), api.JobRequest{Operation: "status"})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/v1/jobs/"+acc.JobID, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ans api.CancelAnswer
	_ = json.NewDecoder(resp.Body).Decode(&ans)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || ans.State != api.StateRunning {
		t.Fatalf("slow cancel answered %d %+v, want 202 running", resp.StatusCode, ans)
	}
	close(release)
	out, err := c.Follow(context.Background(), acc.JobID, 0, nil)
	if err != nil || out.Kind != sse.Cancelled {
		t.Fatalf("stream ended %+v %v", out, err)
	}
}

// slowOps runs one job that ignores cancellation until released.
type slowOps struct{ release chan struct{} }

func (slowOps) Specs() api.OpSpecs { return api.OpSpecs{"status": {}} }
func (o slowOps) Prepare(api.JobRequest) (Func, error) {
	return func(ctx context.Context, j *Job) error { <-o.release; return nil }, nil
}
