// Package report renders what the Docker harness recorded during a test as
// one self-contained HTML page (report.html: inline CSS and SVG, a few
// lines of inline script, nothing fetched), and a run's results as an
// overview page (test-results/report.html). The data of a test's page is
// kept beside it as timeline.json, in the Timeline format below.
//
// The harness (xtask/integration) records a Timeline and calls Write when a
// test fails (or always, with RBEE_REPORT=always); the test runners
// (xtask/testrun, xtask/bench soak) call WriteRun.
package report

import (
	"strings"
	"time"
)

// Timeline is everything recorded about one test's stack, on one clock:
// every time is seconds since Start.
type Timeline struct {
	Test     string    `json:"test"`
	Run      string    `json:"run"` // compose project name
	Topology string    `json:"topology"`
	Start    time.Time `json:"start"`
	Duration float64   `json:"duration"` // seconds from Start to the report
	Failed   bool      `json:"failed"`
	Lanes    []string  `json:"lanes"` // one per service, in drawing order
	Events   []Event   `json:"events"`
	Faults   []Span    `json:"faults"`
	Jobs     []Job     `json:"jobs"`
	Checks   []Check   `json:"checks"`
	Logs     []LogLine `json:"logs"`
	Links    []Link    `json:"links"`
	// Dropped counts what the recorder's bounds left out, per kind.
	Dropped map[string]int `json:"dropped,omitempty"`
}

// Event kinds.
const (
	KindLifecycle = "lifecycle" // container create/start/die/kill/pause/… (Docker events)
	KindHeartbeat = "heartbeat" // the queen's last_seen of a hive or worker advanced
	KindState     = "state"     // the queen reports a hive or worker in a new state
	KindNote      = "note"      // something the harness or a test attached (nemesis seed, …)
	KindFailure   = "failure"   // a failed assertion, or the moment the test was seen failed
)

// Event is one moment on a lane ("" lane: the test's own row).
type Event struct {
	T    float64 `json:"t"`
	Lane string  `json:"lane,omitempty"`
	Kind string  `json:"kind"`
	Text string  `json:"text"`
	Link string  `json:"link,omitempty"`
}

// Span is a fault in force from Start to End (End = Duration and Open when
// it was never recovered), shaded over the lanes it affects.
type Span struct {
	Start float64  `json:"start"`
	End   float64  `json:"end"`
	Open  bool     `json:"open,omitempty"`
	Lanes []string `json:"lanes"`
	Text  string   `json:"text"`
	Rules string   `json:"rules,omitempty"` // the rules installed for it
}

// Job is one job of the test's History.
type Job struct {
	ID         string  `json:"id,omitempty"` // "" when the submit failed
	Op         string  `json:"op"`
	Submit     float64 `json:"submit"`
	End        float64 `json:"end"` // = Duration while unfinished
	Ended      bool    `json:"ended"`
	Terminator string  `json:"terminator,omitempty"`
	Events     int     `json:"events"`
	Err        string  `json:"err,omitempty"`
}

// Latency is how long the job took from submit to its end, in seconds.
func (j Job) Latency() float64 { return j.End - j.Submit }

// Check is one thing the test awaited: from Start until it held (OK) or
// failed (Err).
type Check struct {
	Start float64 `json:"start"`
	End   float64 `json:"end"`
	Done  bool    `json:"done"`
	What  string  `json:"what"`
	OK    bool    `json:"ok"`
	Err   string  `json:"err,omitempty"`
}

// LogLine is one line of a service's log, timed by Docker.
type LogLine struct {
	T    float64 `json:"t"`
	Lane string  `json:"lane"`
	Text string  `json:"text"`
}

// Link is a file beside the report (raw log, inspect JSON, pcap, …) or an
// address a note attached.
type Link struct {
	Name string `json:"name"`
	Href string `json:"href"`
}

// Failure returns the failure to pin on the time axis: the first failure
// event with a message from an assertion, else the first failure event
// (the moment the test was seen failed), else a failed check; ok is false
// when none was recorded.
func (tl *Timeline) Failure() (Event, bool) {
	var first *Event
	for i := range tl.Events {
		e := &tl.Events[i]
		if e.Kind != KindFailure {
			continue
		}
		if e.Lane == "" && !isDetected(e) {
			return *e, true
		}
		if first == nil {
			first = e
		}
	}
	for _, c := range tl.Checks {
		if c.Done && !c.OK {
			if first == nil || c.End <= first.T {
				text := c.Err
				if !strings.HasPrefix(text, "await ") {
					text = "await " + c.What + ": " + text
				}
				return Event{T: c.End, Kind: KindFailure, Text: text}, true
			}
		}
	}
	if first != nil {
		return *first, true
	}
	return Event{}, false
}

// DetectedText is the text of the failure event the harness adds when it
// sees the test marked failed without knowing the message.
const DetectedText = "test marked failed (t.Error/t.Fatal in the test; message in the test output)"

func isDetected(e *Event) bool { return e.Text == DetectedText }

// ActiveAt returns the faults in force at t.
func (tl *Timeline) ActiveAt(t float64) []Span {
	var out []Span
	for _, s := range tl.Faults {
		if s.Start <= t && (s.Open || t < s.End) {
			out = append(out, s)
		}
	}
	return out
}
