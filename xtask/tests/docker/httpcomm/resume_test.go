//go:build docker

package httpcomm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// wholeBody is a transport that reads each response body to EOF before
// handing it on, so the caller can see every byte the server sent on the
// connection, not only what a reader consumed before it stopped.
type wholeBody struct {
	body *[]byte
}

func (t wholeBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := (&http.Transport{DisableKeepAlives: true, Proxy: nil}).RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", r.URL, err)
	}
	*t.body = b
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

// finishedStream reads the stream of a finished job once at base+path,
// with Last-Event-ID: after when after > 0, and returns every event the
// server sent on that one connection, terminators included, in order. A
// finished job's stream ends by itself, so the read ends. opts sign the
// request for a hive; no reconnect is made, so nothing is hidden by a
// client's resume.
func finishedStream(ctx context.Context, base, path, jobID string, after int, opts ...client.Option) ([]sse.Event, error) {
	var raw []byte
	opts = append(opts, client.WithStreamClient(&http.Client{Transport: wholeBody{&raw}}), client.WithReconnects(0))
	c := client.New(base, opts...)
	// The client's own verdict (a missing terminator, say) is not the
	// measurement: the bytes on the wire are. A non-200 answer is.
	_, ferr := c.FollowPath(ctx, path, jobID, after, nil)
	if ae := (*client.APIError)(nil); errors.As(ferr, &ae) {
		return nil, ferr
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	r := sse.NewReader(bytes.NewReader(raw))
	var evs []sse.Event
	for {
		ev, err := r.Next()
		if err == io.EOF {
			return evs, nil
		}
		if err != nil {
			return evs, fmt.Errorf("stream of %s after %d: %w", jobID, after, err)
		}
		evs = append(evs, ev)
	}
}

// checkResume reads a finished job's stream whole, then resumes it with
// Last-Event-ID at its terminator, past it, and (the control) before it:
// PROTOCOL.md §2 — `Last-Event-ID: N` resumes after event N, and a stream
// resumed at or past the terminator of a finished job sends the terminator
// again, so a client that missed only the end still ends.
func checkResume(t *testing.T, ctx context.Context, who, base, jobID string, wantTerm sse.TermKind, opts ...client.Option) {
	t.Helper()
	path := "/v1/jobs/" + jobID + "/stream"
	full, err := finishedStream(ctx, base, path, jobID, 0, opts...)
	if err != nil {
		t.Fatalf("%s job %s: whole stream: %v", who, jobID, err)
	}
	n := len(full)
	if n == 0 {
		t.Fatalf("%s job %s: an empty stream", who, jobID)
	}
	// The control: resume two events before the end where there are that
	// many (Last-Event-ID 0 is no resume at all), else one; a stream that is
	// only its terminator has no control of its own (the other streams do).
	ctl := max(n-2, 1)
	for i, ev := range full {
		if ev.ID != i+1 {
			t.Fatalf("%s job %s: event %d has id %d, want %d:\n%s", who, jobID, i, ev.ID, i+1, describeEvents(full))
		}
		if ev.IsTerminator() != (i == n-1) {
			t.Fatalf("%s job %s: want exactly one terminator, last:\n%s", who, jobID, describeEvents(full))
		}
	}
	if k, _ := sse.Terminator(full[n-1].Data); k != wantTerm {
		t.Fatalf("%s job %s ended %q; want %s", who, jobID, full[n-1].Data, wantTerm)
	}
	last := full[n-1]

	type resume struct {
		after int
		want  []sse.Event
	}
	resumes := []resume{
		{n, full[n-1:]},     // at the terminator: the terminator again
		{n + 5, full[n-1:]}, // past it: the same
	}
	if n >= 2 {
		resumes = append(resumes, resume{ctl, full[ctl:]}) // control: an ordinary resume, the events after ctl
	}
	var afters []int
	for _, c := range resumes {
		afters = append(afters, c.after)
		got, err := finishedStream(ctx, base, path, jobID, c.after, opts...)
		if err != nil {
			t.Fatalf("%s job %s: resume with Last-Event-ID %d: %v", who, jobID, c.after, err)
		}
		if !sameEvents(got, c.want) {
			t.Fatalf("%s job %s (%d events, last id=%d %q): resumed with Last-Event-ID %d, got %d events:\n%swant %d:\n%s",
				who, jobID, n, last.ID, last.Data, c.after, len(got), describeEvents(got), len(c.want), describeEvents(c.want))
		}
	}
	t.Logf("%s job %s: %d events ending %q; resumed after %v as PROTOCOL.md says", who, jobID, n, last.Data, afters)
}

// A finished job's stream resumed with Last-Event-ID equal to the id of its
// terminator (or past it) delivers exactly the terminator again, and resumed
// after an earlier event delivers exactly the events after it: on the
// queen's stream and on the hive's own stream of the forwarded job, for a
// job that ended [DONE] and one that ended [ERROR].
func TestResumeFinishedStreamAtTerminator(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.Localhost)
	ctx := suite.Context(t, 2*time.Minute)
	q := h.MustQueen(t)
	if err := checks.AwaitHiveState(ctx, q, localHive, api.HiveOnline, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	hive, err := h.Hive(localHive)
	if err != nil {
		t.Fatal(err)
	}
	sign, err := client.WithKeyFile(h.ClusterKeyFile())
	if err != nil {
		t.Fatal(err)
	}

	var hist checks.History
	for _, c := range []struct {
		req  api.JobRequest
		want sse.TermKind
	}{
		{hiveOp(localHive), sse.Done},
		// No such model in the hive's catalog: the hive's job ends [ERROR],
		// and so does the queen's.
		{api.JobRequest{Operation: api.OpModelGet, HiveID: localHive, Model: "rbee/absent:model.bin"}, sse.Error},
	} {
		out := suite.Try(t, time.Minute, q, &hist, c.req)
		if out.Kind != c.want {
			t.Fatalf("%s via the queen ended %s; want %s", c.req.Operation, out.Terminator(), c.want)
		}
		hiveJob := hiveJobOf(t, out, localHive)
		checkResume(t, ctx, "queen", q.BaseURL(), out.JobID, c.want)
		checkResume(t, ctx, "hive", hive.BaseURL(), hiveJob, c.want, sign)
	}
	suite.NothingLost(t, time.Minute, q, &hist)
}
