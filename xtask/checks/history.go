package checks

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
)

// History is a client-side record of every job a test submitted (Jepsen's
// idea applied to our jobs): at the end, CheckNothingLost re-reads each
// job's stream from the start and its status, and fails if a job has no
// terminator, more than one, or a status that disagrees.
type History struct {
	mu      sync.Mutex
	entries []Entry
}

// Entry is one submitted job and what the client saw of it.
type Entry struct {
	Op       string
	JobID    string
	Outcome  client.Outcome
	Err      error // submit or follow error seen by the client
	Accepted bool
}

// Run submits req through q, follows it, records it, and returns what the
// client saw.
func (h *History) Run(ctx context.Context, q *client.Client, req api.JobRequest) (client.Outcome, error) {
	acc, err := h.Submit(ctx, q, req)
	if err != nil {
		return client.Outcome{}, err
	}
	return h.Adopt(ctx, q, req.Operation, acc.JobID, nil)
}

// Submit submits req through q without following it; a refused submission
// is recorded. The caller follows the accepted job with Adopt, which
// records it, when it wants to act while the job runs.
func (h *History) Submit(ctx context.Context, q *client.Client, req api.JobRequest) (api.JobAccepted, error) {
	notify(Event{Kind: KindSubmit, Base: q.BaseURL(), Op: req.Operation})
	acc, err := q.Submit(ctx, req)
	if err != nil {
		h.add(Entry{Op: req.Operation, Err: err})
		notify(Event{Kind: KindJobEnd, Base: q.BaseURL(), Op: req.Operation, Err: err})
		return acc, err
	}
	notify(Event{Kind: KindAccepted, Base: q.BaseURL(), Op: req.Operation, Job: acc.JobID})
	return acc, nil
}

// Adopt records a job that Submit or something other than the History
// submitted (a CLI the test ran, for example): it follows the job's stream
// from the first event, calling onEvent (if non-nil) for each as Follow
// does, and records what it saw, so that CheckNothingLost covers it too.
func (h *History) Adopt(ctx context.Context, q *client.Client, op, jobID string, onEvent func(sse.Event) error) (client.Outcome, error) {
	follow := onEvent
	if obs := eventNotifier(q.BaseURL(), op, jobID); obs != nil {
		follow = func(ev sse.Event) error {
			_ = obs(ev)
			if onEvent != nil {
				return onEvent(ev)
			}
			return nil
		}
	}
	out, err := q.Follow(ctx, jobID, 0, follow)
	h.add(Entry{Op: op, JobID: jobID, Outcome: out, Err: err, Accepted: true})
	notify(Event{Kind: KindJobEnd, Base: q.BaseURL(), Op: op, Job: jobID, Data: terminatorOf(out, err), Err: err})
	return out, err
}

func terminatorOf(o client.Outcome, err error) string {
	if err != nil && o.Kind == sse.NotTerminator {
		return ""
	}
	return o.Terminator()
}

func (h *History) add(e Entry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.entries = append(h.entries, e)
}

// Entries returns a copy of the record.
func (h *History) Entries() []Entry {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Entry(nil), h.entries...)
}

// CheckNothingLost verifies every accepted job: its full stream, read
// again from the first event to EOF, has exactly one terminator, as the
// last event, equal to what the client saw; and GET /v1/jobs/{id} reports
// the matching final state.
func (h *History) CheckNothingLost(ctx context.Context, q *client.Client) error {
	var problems []string
	for _, e := range h.Entries() {
		if !e.Accepted {
			continue
		}
		if err := checkJob(ctx, q, e); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%d of %d jobs lost or inconsistent:\n  %s", len(problems), len(h.Entries()), strings.Join(problems, "\n  "))
	}
	return nil
}

func checkJob(ctx context.Context, q *client.Client, e Entry) error {
	if e.Err != nil {
		return fmt.Errorf("%s %s: client never saw a terminator: %v", e.Op, e.JobID, e.Err)
	}
	terms, last, err := rawTerminators(ctx, q.BaseURL(), e.JobID)
	if err != nil {
		return fmt.Errorf("%s %s: re-reading stream: %v", e.Op, e.JobID, err)
	}
	if len(terms) != 1 {
		return fmt.Errorf("%s %s: %d terminators in stream %v, want exactly 1", e.Op, e.JobID, len(terms), terms)
	}
	if !last {
		return fmt.Errorf("%s %s: events follow the terminator", e.Op, e.JobID)
	}
	if terms[0] != e.Outcome.Terminator() {
		return fmt.Errorf("%s %s: stream ends %q but the client saw %q", e.Op, e.JobID, terms[0], e.Outcome.Terminator())
	}
	st, err := q.Job(ctx, e.JobID)
	if err != nil {
		return fmt.Errorf("%s %s: status: %v", e.Op, e.JobID, err)
	}
	want := map[sse.TermKind]api.JobState{sse.Done: api.StateCompleted, sse.Error: api.StateFailed, sse.Cancelled: api.StateCancelled}[e.Outcome.Kind]
	if st.State != want {
		return fmt.Errorf("%s %s: status says %s but the stream ended %s", e.Op, e.JobID, st.State, e.Outcome.Terminator())
	}
	if st.FinishedAt == nil {
		return fmt.Errorf("%s %s: status has no finished_at", e.Op, e.JobID)
	}
	return nil
}

// rawTerminators reads the whole stream to EOF and returns every
// terminator line and whether the last event was one.
func rawTerminators(ctx context.Context, base, id string) ([]string, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/jobs/"+id+"/stream", nil)
	if err != nil {
		return nil, false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, false, fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	r := sse.NewReader(resp.Body)
	var terms []string
	lastIsTerm := false
	for {
		ev, err := r.Next()
		if err == io.EOF {
			return terms, lastIsTerm, nil
		}
		if err != nil {
			return terms, false, err
		}
		lastIsTerm = ev.IsTerminator()
		if lastIsTerm {
			terms = append(terms, ev.Data)
		}
	}
}
