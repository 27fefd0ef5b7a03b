package checks

import (
	"sync"
	"time"

	"github.com/rbee-dev/rbee/internal/sse"
)

// Event is what History and Await tell observers as it happens: a job's
// submit, acceptance, each stream event and its end; an await's start and
// whether it held. The harness's timeline records them for the failure
// report.
type Event struct {
	At   time.Time
	Kind EventKind
	Base string // the queen's base URL a job went to ("" for awaits)
	Op   string // job operation
	Job  string // job id (once accepted)
	Name string // stream event name (KindJobEvent)
	Data string // stream event data, or the terminator (KindJobEnd), at most 200 bytes
	What string // what an await waits for
	Err  error  // submit/follow error, or why an await failed
}

// EventKind says what an Event reports.
type EventKind int

const (
	KindSubmit    EventKind = iota + 1 // a job is being submitted
	KindAccepted                       // the queen accepted it (Job set)
	KindJobEvent                       // one non-terminator stream event
	KindJobEnd                         // the client saw the terminator (Data) or gave up (Err)
	KindAwait                          // an await started
	KindAwaitDone                      // an await held (Err nil) or failed
)

var (
	obsMu     sync.Mutex
	observers = map[int]func(Event){}
	obsNext   int
)

// Observe calls fn for every Event of this process until stop is called.
// fn runs on the caller's goroutine and must be quick and not block.
func Observe(fn func(Event)) (stop func()) {
	obsMu.Lock()
	defer obsMu.Unlock()
	id := obsNext
	obsNext++
	observers[id] = fn
	return func() {
		obsMu.Lock()
		defer obsMu.Unlock()
		delete(observers, id)
	}
}

func observed() bool {
	obsMu.Lock()
	defer obsMu.Unlock()
	return len(observers) > 0
}

func notify(e Event) {
	obsMu.Lock()
	fns := make([]func(Event), 0, len(observers))
	for _, fn := range observers {
		fns = append(fns, fn)
	}
	obsMu.Unlock()
	if len(fns) == 0 {
		return
	}
	if e.At.IsZero() {
		e.At = time.Now()
	}
	if len(e.Data) > 200 {
		e.Data = e.Data[:200] + "…"
	}
	for _, fn := range fns {
		fn(e)
	}
}

// eventNotifier is Follow's onEvent for job id: nil when nobody observes.
func eventNotifier(base, op, id string) func(sse.Event) error {
	if !observed() {
		return nil
	}
	return func(ev sse.Event) error {
		notify(Event{Kind: KindJobEvent, Base: base, Op: op, Job: id, Name: ev.Name, Data: ev.Data})
		return nil
	}
}

// observeAwait tells observers an await started; the returned func tells
// them how it ended.
func observeAwait(what string, timeout time.Duration) func(*error) {
	what = what + " (within " + timeout.String() + ")"
	notify(Event{Kind: KindAwait, What: what})
	return func(err *error) { notify(Event{Kind: KindAwaitDone, What: what, Err: *err}) }
}
