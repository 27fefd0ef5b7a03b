// Package jobs is the job engine shared by queen-rbee, rbee-hive and
// llm-worker-rbee: a job starts on submit, records every event it emits so
// that any number of readers can replay and follow it, ends with exactly one
// terminator, can be cancelled (the cancellation reaches the running work
// through its context), and is forgotten after a bounded time and count.
package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/sse"
)

// Func is the work of a job. It emits events through j and returns nil for
// success ([DONE]), an error for failure ([ERROR] err), or ErrCancelled (or
// any error once ctx was cancelled by DELETE/shutdown) for [CANCELLED].
type Func func(ctx context.Context, j *Job) error

// ErrCancelled ends a job with [CANCELLED] even if nobody cancelled it here,
// e.g. when a forwarded hive job was cancelled.
var ErrCancelled = errors.New("cancelled")

// Defaults for Options.
const (
	DefaultRetention     = 10 * time.Minute
	DefaultMaxJobs       = 10000
	DefaultMaxRunning    = 1024
	DefaultMaxEvents     = 100_000
	DefaultMaxJobBytes   = 8 << 20
	DefaultRetainedBytes = 64 << 20
)

// Options configure an Engine.
type Options struct {
	Retention time.Duration // finished jobs are kept this long (default 10 min)
	MaxJobs   int           // at most this many jobs are kept (default 10 000)
	// MaxRunning caps the jobs running at once; TrySubmit refuses more
	// with ErrBusy (default 1024).
	MaxRunning int
	// MaxEvents and MaxJobBytes bound what one job records (events, and
	// bytes of event names and data); the job that would pass either ends
	// [ERROR] (defaults 100 000 and 8 MiB).
	MaxEvents   int
	MaxJobBytes int
	// RetainedBytes bounds the recorded bytes of all finished jobs kept;
	// the oldest are forgotten first (default 64 MiB).
	RetainedBytes int64
	Logf          func(format string, args ...any)
	Now           func() time.Time
}

// Engine runs and keeps jobs.
type Engine struct {
	opts   Options
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	jobs    map[string]*Job
	running int
	closed  bool
}

// NewEngine returns an engine. Close it to cancel all running jobs.
func NewEngine(opts Options) *Engine {
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.MaxJobs <= 0 {
		opts.MaxJobs = DefaultMaxJobs
	}
	if opts.MaxRunning <= 0 {
		opts.MaxRunning = DefaultMaxRunning
	}
	if opts.MaxEvents <= 0 {
		opts.MaxEvents = DefaultMaxEvents
	}
	if opts.MaxJobBytes <= 0 {
		opts.MaxJobBytes = DefaultMaxJobBytes
	}
	if opts.RetainedBytes <= 0 {
		opts.RetainedBytes = DefaultRetainedBytes
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Engine{opts: opts, ctx: ctx, cancel: cancel, jobs: map[string]*Job{}}
}

// Job is one unit of work and its recorded events.
type Job struct {
	id, op  string
	created time.Time
	cancel  context.CancelFunc
	done    chan struct{}

	mu           sync.Mutex
	state        api.JobState
	errMsg       string
	finished     time.Time
	events       []sse.Event
	notify       chan struct{} // closed and replaced on every append
	cancelByUser bool

	maxEvents, maxBytes int
	bytes               int   // recorded bytes of event names and data
	failed              error // a bound the job broke; it ends [ERROR] with it
}

// ID returns the job id ("job-<uuid>").
func (j *Job) ID() string { return j.id }

// Operation returns the operation name.
func (j *Job) Operation() string { return j.op }

// Done is closed when the job has its terminator.
func (j *Job) Done() <-chan struct{} { return j.done }

// ErrBusy is returned by TrySubmit when MaxRunning jobs are running.
var ErrBusy = errors.New("too many jobs running")

// Submit starts fn as a new job for operation op and returns at once. It
// does not apply MaxRunning (see TrySubmit).
func (e *Engine) Submit(op string, fn Func) *Job {
	j, _ := e.submit(op, fn, false)
	return j
}

// TrySubmit is Submit, except that it returns ErrBusy (and no job) when
// MaxRunning jobs are running already.
func (e *Engine) TrySubmit(op string, fn Func) (*Job, error) {
	return e.submit(op, fn, true)
}

func (e *Engine) submit(op string, fn Func, capped bool) (*Job, error) {
	ctx, cancel := context.WithCancel(e.ctx)
	j := &Job{
		id:        "job-" + uuid.NewString(),
		op:        op,
		created:   e.opts.Now(),
		cancel:    cancel,
		done:      make(chan struct{}),
		state:     api.StateRunning,
		notify:    make(chan struct{}),
		maxEvents: e.opts.MaxEvents,
		maxBytes:  e.opts.MaxJobBytes,
	}
	e.mu.Lock()
	if capped && !e.closed && e.running >= e.opts.MaxRunning {
		e.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("%w: %d running, the limit", ErrBusy, e.opts.MaxRunning)
	}
	e.pruneLocked()
	e.jobs[j.id] = j
	closed := e.closed
	if !closed {
		e.wg.Add(1) // under e.mu, so Close never waits on a half-added job
		e.running++
	}
	e.mu.Unlock()
	if closed {
		// Shutting down: the job exists (its stream and status answer) but
		// never runs.
		j.cancel()
		j.finish(api.StateCancelled, "", api.TermCancelled, e.opts.Now())
		return j, nil
	}
	e.opts.Logf("job %s: %s started", j.id, op)
	go e.run(ctx, j, fn)
	return j, nil
}

// Running returns how many jobs are running.
func (e *Engine) Running() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.running
}

// Closing reports whether Close has begun; servers answer new jobs 503.
func (e *Engine) Closing() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

func (e *Engine) run(ctx context.Context, j *Job, fn Func) {
	defer e.wg.Done()
	defer func() {
		e.mu.Lock()
		e.running--
		e.mu.Unlock()
	}()
	defer j.cancel()
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("internal error: %v", r)
			}
		}()
		err = fn(ctx, j)
	}()
	j.mu.Lock()
	userCancelled, broke := j.cancelByUser, j.failed
	j.mu.Unlock()
	switch {
	case broke != nil && !userCancelled:
		// The job was stopped for breaking a bound; say so, not [CANCELLED].
		msg := broke.Error()
		j.finish(api.StateFailed, msg, api.TermError+" "+msg, e.opts.Now())
	case err == nil && !userCancelled:
		j.finish(api.StateCompleted, "", api.TermDone, e.opts.Now())
	case userCancelled || errors.Is(err, ErrCancelled) || ctx.Err() != nil:
		// A DELETE wins even when the work finished in the same instant.
		j.finish(api.StateCancelled, "", api.TermCancelled, e.opts.Now())
	default:
		msg := err.Error()
		j.finish(api.StateFailed, msg, api.TermError+" "+msg, e.opts.Now())
	}
	e.opts.Logf("job %s: %s %s", j.id, j.op, j.State())
}

func (j *Job) finish(state api.JobState, errMsg, term string, now time.Time) {
	j.mu.Lock()
	j.state = state
	j.errMsg = errMsg
	j.finished = now
	j.appendLocked("", term)
	j.mu.Unlock()
	close(j.done)
}

func (j *Job) appendLocked(name, data string) {
	j.bytes += len(name) + len(data)
	j.events = append(j.events, sse.Event{ID: len(j.events) + 1, Name: name, Data: data})
	close(j.notify)
	j.notify = make(chan struct{})
}

// Emit records an event whose data is v marshalled as JSON. Events emitted
// after the job finished are dropped.
func (j *Job) Emit(name string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"marshal_error": err.Error()})
	}
	j.EmitRaw(name, string(b))
}

// EmitRaw records an event with data as given (one line). An event that
// would break a bound (an invalid name, more than MaxEvents events or
// MaxJobBytes bytes) is not recorded: the job is stopped and ends [ERROR]
// naming the bound, and later events are dropped.
func (j *Job) EmitRaw(name, data string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.state.Finished() || j.failed != nil {
		return
	}
	switch {
	case !sse.ValidName(name):
		j.failed = fmt.Errorf("event name %q is not valid (want %s)", truncate(name, 64), sse.NameRule)
	case len(j.events)+1 > j.maxEvents:
		j.failed = fmt.Errorf("job exceeded its limit of %d events", j.maxEvents)
	case j.bytes+len(name)+len(data) > j.maxBytes:
		j.failed = fmt.Errorf("job exceeded its limit of %d bytes of events (an event of %d bytes)", j.maxBytes, len(name)+len(data))
	default:
		j.appendLocked(name, data)
		return
	}
	j.cancel()
}

// truncate shortens s to at most n bytes for error messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Bytes returns the bytes of event names and data the job recorded.
func (j *Job) Bytes() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.bytes
}

// Narrate records a narration event.
func (j *Job) Narrate(n api.Narration) { j.Emit(api.EventNarration, n) }

// Result records a result event.
func (j *Job) Result(v any) { j.Emit(api.EventResult, v) }

// State returns the job's current state.
func (j *Job) State() api.JobState {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.state
}

// Status returns the job's status document.
func (j *Job) Status() api.JobStatus {
	j.mu.Lock()
	defer j.mu.Unlock()
	st := api.JobStatus{JobID: j.id, Operation: j.op, State: j.state, Error: j.errMsg, CreatedAt: j.created}
	if !j.finished.IsZero() {
		f := j.finished
		st.FinishedAt = &f
	}
	return st
}

// EventsAfter returns the events with id > after, a channel closed when more
// arrive, and whether the job has finished (its terminator is then among
// the recorded events).
func (j *Job) EventsAfter(after int) ([]sse.Event, <-chan struct{}, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if after < 0 {
		after = 0
	}
	var evs []sse.Event
	if after < len(j.events) {
		evs = append(evs, j.events[after:]...)
	}
	return evs, j.notify, j.state.Finished()
}

// Get returns the job with id, if it is still kept.
func (e *Engine) Get(id string) (*Job, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j, ok := e.jobs[id]
	return j, ok
}

// ErrNotFound and ErrFinished are returned by Cancel.
var (
	ErrNotFound = errors.New("no such job")
	ErrFinished = errors.New("job already finished")
)

// Cancel cancels a running job and waits (up to wait) for it to end with
// [CANCELLED]. It returns ErrNotFound or ErrFinished otherwise.
func (e *Engine) Cancel(id string, wait time.Duration) (*Job, error) {
	j, ok := e.Get(id)
	if !ok {
		return nil, ErrNotFound
	}
	j.mu.Lock()
	if j.state.Finished() {
		j.mu.Unlock()
		return j, ErrFinished
	}
	j.cancelByUser = true
	j.mu.Unlock()
	j.cancel()
	if wait > 0 {
		select {
		case <-j.done:
		case <-time.After(wait):
		}
	}
	return j, nil
}

// Len returns how many jobs are kept.
func (e *Engine) Len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.jobs)
}

// pruneLocked drops finished jobs past retention, then the oldest finished
// jobs while more than MaxJobs-1 are kept (making room for one more) or
// while the finished ones hold more than RetainedBytes.
func (e *Engine) pruneLocked() {
	now := e.opts.Now()
	type fin struct {
		j     *Job
		at    time.Time
		bytes int64
	}
	var finished []fin
	var total int64
	for id, j := range e.jobs {
		j.mu.Lock()
		done, at, n := j.state.Finished(), j.finished, int64(j.bytes)
		j.mu.Unlock()
		if !done {
			continue
		}
		if now.Sub(at) > e.opts.Retention {
			delete(e.jobs, id)
			continue
		}
		finished = append(finished, fin{j, at, n})
		total += n
	}
	excess := len(e.jobs) - (e.opts.MaxJobs - 1)
	if excess <= 0 && total <= e.opts.RetainedBytes {
		return
	}
	sort.Slice(finished, func(a, b int) bool { return finished[a].at.Before(finished[b].at) })
	for i := 0; i < len(finished) && (i < excess || total > e.opts.RetainedBytes); i++ {
		delete(e.jobs, finished[i].j.id)
		total -= finished[i].bytes
	}
}

// Close cancels every running job and waits up to timeout for them to end.
// Readers still following a stream see [CANCELLED].
func (e *Engine) Close(timeout time.Duration) error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.cancel()
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("jobs still running after %s", timeout)
	}
}
