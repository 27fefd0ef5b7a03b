package jobs

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
)

func runTo(t *testing.T, e *Engine, fn Func) *Job {
	t.Helper()
	j := e.Submit("x", fn)
	select {
	case <-j.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("job did not end within 10s")
	}
	return j
}

func terminatorOf(t *testing.T, j *Job) sse.Event {
	t.Helper()
	evs, _, fin := j.EventsAfter(0)
	if !fin || len(evs) == 0 || !evs[len(evs)-1].IsTerminator() {
		t.Fatalf("no terminator: %+v", evs)
	}
	for _, ev := range evs[:len(evs)-1] {
		if ev.IsTerminator() {
			t.Fatalf("a terminator before the end: %+v", evs)
		}
	}
	return evs[len(evs)-1]
}

// A job that emits more events than MaxEvents is stopped and ends [ERROR]
// naming the bound; what it recorded stays within the bound.
func TestEventCountBound(t *testing.T) {
	e := NewEngine(Options{MaxEvents: 10})
	defer e.Close(time.Second)
	j := runTo(t, e, func(ctx context.Context, j *Job) error {
		for i := 0; i < 1000 && ctx.Err() == nil; i++ {
			j.EmitRaw(api.EventToken, `{"t":"x"}`)
		}
		return nil
	})
	term := terminatorOf(t, j)
	if j.State() != api.StateFailed || !strings.Contains(term.Data, "limit of 10 events") {
		t.Fatalf("state %s, terminator %q; want failed naming the limit of 10 events", j.State(), term.Data)
	}
	if evs, _, _ := j.EventsAfter(0); len(evs) != 11 {
		t.Fatalf("%d events recorded; want 10 and the terminator", len(evs))
	}
}

// A job whose events pass MaxJobBytes ends [ERROR]; the oversized event is
// not kept.
func TestEventBytesBound(t *testing.T) {
	e := NewEngine(Options{MaxJobBytes: 10_000})
	defer e.Close(time.Second)
	big := strings.Repeat("x", 4000)
	j := runTo(t, e, func(ctx context.Context, j *Job) error {
		for i := 0; i < 60 && ctx.Err() == nil; i++ {
			j.EmitRaw(api.EventToken, big)
		}
		return nil
	})
	term := terminatorOf(t, j)
	if j.State() != api.StateFailed || !strings.Contains(term.Data, "limit of 10000 bytes") {
		t.Fatalf("state %s, terminator %q; want failed naming the byte limit", j.State(), term.Data)
	}
	if n := j.Bytes(); n > 10_000+len(term.Data) {
		t.Fatalf("job recorded %d bytes; want at most the limit and the terminator", n)
	}
}

// An event name that could break SSE framing (CR, LF, colon, empty) is
// never recorded: the job ends [ERROR] and no terminator appears early.
func TestInvalidEventNameEndsJob(t *testing.T) {
	e := NewEngine(Options{})
	defer e.Close(time.Second)
	for _, name := range []string{"tok\r", "tok\ndata: [DONE]", "a:b", "", "x y", strings.Repeat("n", 65)} {
		j := runTo(t, e, func(ctx context.Context, j *Job) error {
			j.EmitRaw(api.EventToken, `{"t":"a"}`)
			j.EmitRaw(name, api.TermDone)
			j.EmitRaw(api.EventToken, `{"t":"b"}`)
			return nil
		})
		term := terminatorOf(t, j)
		if j.State() != api.StateFailed || !strings.Contains(term.Data, "event name") {
			t.Errorf("name %q: state %s, terminator %q; want failed naming the event name", name, j.State(), term.Data)
		}
		if evs, _, _ := j.EventsAfter(0); len(evs) != 2 {
			t.Errorf("name %q: recorded %+v; want the first token and the terminator", name, evs)
		}
	}
}

// At MaxRunning running jobs, TrySubmit refuses with ErrBusy and the HTTP
// API answers 503 with a clear message; once a job ends there is room.
func TestRunningJobsCap(t *testing.T) {
	e := NewEngine(Options{MaxRunning: 2})
	d := &dispatcher{release: make(chan struct{})}
	mux := http.NewServeMux()
	e.Mount(mux, d)
	srv := httptest.NewServer(mux)
	defer func() { srv.Close(); e.Close(5 * time.Second) }()
	c := client.New(srv.URL)
	ctx := context.Background()
	for range 2 {
		if _, err := c.Submit(ctx, api.JobRequest{Operation: "infer", Model: "m", Prompt: "p", MaxTokens: 1}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.Submit(ctx, api.JobRequest{Operation: "infer", Model: "m", Prompt: "p", MaxTokens: 1})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || !strings.Contains(ae.Message, "too many jobs running") {
		t.Fatalf("third job: %v; want 503 too many jobs running", err)
	}
	if _, err := e.TrySubmit("x", func(context.Context, *Job) error { return nil }); !errors.Is(err, ErrBusy) {
		t.Fatalf("TrySubmit at the cap: %v, want ErrBusy", err)
	}
	close(d.release)
	deadline := time.Now().Add(10 * time.Second)
	for e.Running() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := c.Run(ctx, api.JobRequest{Operation: "status"}, nil); err != nil {
		t.Fatalf("after the running jobs ended: %v", err)
	}
}

// Finished jobs are forgotten oldest first once they hold more than
// RetainedBytes together, however few they are.
func TestRetainedBytesBound(t *testing.T) {
	e := NewEngine(Options{RetainedBytes: 10_000})
	defer e.Close(time.Second)
	big := strings.Repeat("x", 3000)
	var last *Job
	for range 20 {
		last = runTo(t, e, func(ctx context.Context, j *Job) error { j.EmitRaw(api.EventResult, big); return nil })
	}
	e.Submit("y", func(context.Context, *Job) error { return nil })
	if n := e.Len(); n > 5 {
		t.Fatalf("%d jobs kept; want at most 3 of 3000 bytes under a 10000-byte budget (+ the running one)", n)
	}
	if _, ok := e.Get(last.ID()); !ok {
		t.Fatal("the newest finished job was forgotten")
	}
}

// Last-Event-ID past the end of a running job does not close the stream
// without a terminator: the reader waits and gets the end.
func TestResumePastTheEndOfRunningJob(t *testing.T) {
	_, d, c := newServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	acc, err := c.Submit(ctx, api.JobRequest{Operation: "infer", Model: "m", Prompt: "p", MaxTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL()+acc.SSEURL, nil)
	req.Header.Set("Last-Event-ID", "100")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	close(d.release) // the stream is open (headers came): now let the job end
	rd := sse.NewReader(resp.Body)
	for {
		ev, err := rd.Next()
		if err != nil {
			t.Fatalf("stream ended without a terminator: %v", err)
		}
		if ev.IsTerminator() {
			if ev.Data != api.TermDone {
				t.Fatalf("terminator %q, want [DONE]", ev.Data)
			}
			return
		}
	}
}
