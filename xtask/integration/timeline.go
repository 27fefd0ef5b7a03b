package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/compose/v5/pkg/api"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"

	rbeeclient "github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/dockerx"
	"github.com/rbee-dev/rbee/xtask/report"
)

// The recorder's bounds: a long run keeps the first events of each kind up
// to these counts and counts the rest as dropped, so memory and the report
// stay small however long a test runs.
const (
	maxEventsPerKind = 6000
	maxJobs          = 4000
	maxChecks        = 2000
	maxLogLines      = 1500 // per service, the last ones
	maxLogLineLen    = 400
	// SampleInterval is how often the recorder reads the queen's registry
	// (last_seen and state of every hive and worker): the topologies'
	// heartbeat interval.
	SampleInterval = 500 * time.Millisecond
)

// ReportEnv set to "always" writes report.html for passing tests too.
const ReportEnv = "RBEE_REPORT"

// recorder is the harness's timeline: everything that happened to the
// stack and what the test did, on one clock (seconds since the harness
// started). Safe for concurrent use; every method is a no-op on nil.
type recorder struct {
	h      *Harness
	start  time.Time
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stopCh func() // stops observing History and Await

	mu       sync.Mutex
	events   []report.Event
	perKind  map[string]int
	dropped  map[string]int
	faults   []report.Span
	open     map[string]int // active effect → index in faults
	jobs     []report.Job
	jobByID  map[string]int
	pending  map[string][]int // base+op → jobs submitted, not yet accepted
	checks   []report.Check
	links    []report.Link
	ports    map[int]bool // host ports this stack's services have had
	failed   func() bool
	failSeen bool
	seen     map[string]time.Time // registry row → last_seen sampled
	state    map[string]string    // registry row → state sampled
	lastDock int64                // TimeNano of the last Docker event
}

// startTimeline begins recording h: Docker events of the run's containers,
// the queen's registry sampled every SampleInterval, and the jobs and
// awaits of xtask/checks.
func (h *Harness) startTimeline() {
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{h: h, start: h.started, cancel: cancel, perKind: map[string]int{}, dropped: map[string]int{},
		open: map[string]int{}, jobByID: map[string]int{}, pending: map[string][]int{}, ports: map[int]bool{},
		seen: map[string]time.Time{}, state: map[string]string{}}
	h.tl = r
	r.stopCh = checks.Observe(r.observe)
	r.wg.Add(2)
	go func() { defer r.wg.Done(); r.watchDocker(ctx) }()
	go func() { defer r.wg.Done(); r.sample(ctx) }()
}

// stop ends recording (the data stays for the report).
func (r *recorder) stop() {
	if r == nil {
		return
	}
	r.stopCh()
	r.cancel()
	r.wg.Wait()
}

func (r *recorder) since(t time.Time) float64 { return t.Sub(r.start).Seconds() }

func (r *recorder) addLocked(e report.Event) {
	if r.perKind[e.Kind] >= maxEventsPerKind {
		r.dropped[e.Kind]++
		return
	}
	r.perKind[e.Kind]++
	r.events = append(r.events, e)
}

func (r *recorder) add(e report.Event) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addLocked(e)
}

// Note puts text on the test's row of the timeline at this moment, with an
// optional link (a nemesis seed or schedule file, a capture, an address);
// the report shows the note and lists the link.
func (h *Harness) Note(text, link string) {
	r := h.tl
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addLocked(report.Event{T: r.since(time.Now()), Kind: report.KindNote, Text: text, Link: link})
	if link != "" {
		r.links = append(r.links, report.Link{Name: text, Href: link})
	}
}

// failure pins a failed assertion (the Must layer's error) on the timeline.
func (r *recorder) failure(err error) {
	if r == nil || err == nil {
		return
	}
	r.add(report.Event{T: r.since(time.Now()), Kind: report.KindFailure, Text: err.Error()})
}

// check records one of the harness's waits: call it when the wait starts
// and the returned func with its error when it ends.
func (r *recorder) check(what string) func(*error) {
	if r == nil {
		return func(*error) {}
	}
	i := r.openCheck(what, time.Now())
	return func(err *error) { r.closeCheck(i, *err, time.Now()) }
}

func (r *recorder) openCheck(what string, at time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.checks) >= maxChecks {
		r.dropped["check"]++
		return -1
	}
	t := r.since(at)
	r.checks = append(r.checks, report.Check{Start: t, End: t, What: what})
	return len(r.checks) - 1
}

func (r *recorder) closeCheck(i int, err error, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i < 0 || i >= len(r.checks) {
		return
	}
	c := &r.checks[i]
	c.End, c.Done, c.OK = r.since(at), true, err == nil
	if err != nil {
		c.Err = err.Error()
	}
}

// watchTest lets the sampler notice when t is marked failed, for failures
// the harness did not see happen (t.Errorf in the test itself).
func (r *recorder) watchTest(failed func() bool) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.failed = failed
	r.mu.Unlock()
}

// observe takes the events of xtask/checks: jobs sent to this stack's
// queen (known by its host ports), and every await (a test process runs
// one stack at a time, unless its tests run in parallel).
func (r *recorder) observe(e checks.Event) {
	t := r.since(e.At)
	switch e.Kind {
	case checks.KindAwait:
		r.openCheck(e.What, e.At)
		return
	case checks.KindAwaitDone:
		r.mu.Lock()
		i := -1
		for k := len(r.checks) - 1; k >= 0; k-- {
			if r.checks[k].What == e.What && !r.checks[k].Done {
				i = k
				break
			}
		}
		r.mu.Unlock()
		r.closeCheck(i, e.Err, e.At)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	i, known := r.jobByID[e.Job]
	if !known || e.Job == "" {
		if !r.ownsLocked(e.Base) {
			return
		}
	}
	key := e.Base + " " + e.Op
	switch e.Kind {
	case checks.KindSubmit:
		if len(r.jobs) >= maxJobs {
			r.dropped["job"]++
			return
		}
		r.jobs = append(r.jobs, report.Job{Op: e.Op, Submit: t, End: t})
		r.pending[key] = append(r.pending[key], len(r.jobs)-1)
		return
	case checks.KindAccepted:
		if q := r.pending[key]; len(q) > 0 {
			i, r.pending[key] = q[0], q[1:]
			r.jobs[i].ID = e.Job
			r.jobByID[e.Job] = i
		}
		return
	}
	if !known {
		// A submit that failed has no id: it is the oldest pending one.
		q := r.pending[key]
		if e.Kind != checks.KindJobEnd || e.Job != "" || len(q) == 0 {
			return
		}
		i, r.pending[key] = q[0], q[1:]
	}
	j := &r.jobs[i]
	switch e.Kind {
	case checks.KindJobEvent:
		j.Events++
	case checks.KindJobEnd:
		j.End, j.Ended, j.Terminator = t, true, e.Data
		if e.Err != nil {
			j.Err = e.Err.Error()
		}
	}
}

// ownsLocked: base is the address of one of this stack's published ports.
func (r *recorder) ownsLocked(base string) bool {
	u, err := url.Parse(base)
	if err != nil {
		return false
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		return false
	}
	if r.ports[p] {
		return true
	}
	r.h.mu.Lock()
	for _, s := range r.h.services {
		for _, hp := range s.ports {
			r.ports[hp] = true
		}
	}
	r.h.mu.Unlock()
	return r.ports[p]
}

// traceFaults brings the fault spans up to date with the active faults;
// Inject, Recover and RecoverAll call it with faultMu held.
func (h *Harness) traceFaults() {
	r := h.tl
	if r == nil {
		return
	}
	now := r.since(time.Now())
	active := map[string]rule{}
	for _, e := range h.faults {
		active[e.key()] = e
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, i := range r.open {
		if _, ok := active[k]; !ok {
			r.faults[i].End, r.faults[i].Open = now, false
			delete(r.open, k)
		}
	}
	for _, e := range h.faults {
		k := e.key()
		if _, ok := r.open[k]; ok {
			continue
		}
		lanes := []string{e.on()}
		if p := e.peer(); p != "" {
			lanes = append(lanes, p)
		}
		r.faults = append(r.faults, report.Span{Start: now, End: now, Open: true, Lanes: lanes, Text: e.String(), Rules: h.effectRules(e)})
		r.open[k] = len(r.faults) - 1
	}
}

// effectRules is the part of the target's rule script that e adds.
func (h *Harness) effectRules(e rule) string {
	env := ruleEnv{peers: map[string]netip.Addr{}}
	env.self, _ = h.ip(e.on())
	if p := e.peer(); p != "" {
		env.peers[p], _ = h.ip(p)
	}
	if len(h.nets) > 0 {
		env.subnet = h.nets[0].subnet
		env.gateway = h.gateway[h.nets[0].key]
	}
	_, rs := render([]rule{e}, env, false)
	keep := append([]string(nil), rs.filter...)
	for _, c := range rs.qdisc.commands() {
		if strings.Contains(c, "qdisc replace") {
			keep = append(keep, c)
		}
	}
	keep = append(keep, rs.nat...)
	return fmt.Sprintf("in %s's network namespace:\n%s", e.on(), strings.Join(keep, "\n"))
}

// watchDocker records the lifecycle events of the run's containers,
// reconnecting (from the last event seen) when the stream breaks.
func (r *recorder) watchDocker(ctx context.Context) {
	f := make(client.Filters).Add("label", dockerx.LabelRun+"="+r.h.name).Add("type", "container").
		Add("event", "create", "start", "restart", "kill", "die", "stop", "pause", "unpause", "oom")
	since := r.start.Add(-time.Second)
	for ctx.Err() == nil {
		res := r.h.docker.Events(ctx, client.EventsListOptions{Filters: f, Since: fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond())})
	stream:
		for {
			select {
			case m, ok := <-res.Messages:
				if !ok {
					break stream
				}
				r.dockerEvent(m)
				since = time.Unix(0, m.TimeNano)
			case <-res.Err:
				break stream
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (r *recorder) dockerEvent(m events.Message) {
	a := m.Actor.Attributes
	if a[dockerx.LabelRole] != "" {
		return // the harness's own fault helpers
	}
	svc := a[api.ServiceLabel]
	if svc == "" {
		return
	}
	text := string(m.Action)
	switch m.Action {
	case events.ActionDie:
		text = "die (exit " + a["exitCode"] + ")"
	case events.ActionKill:
		text = "kill (signal " + a["signal"] + ")"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.TimeNano <= r.lastDock {
		return // replayed after a reconnect
	}
	r.lastDock = m.TimeNano
	r.addLocked(report.Event{T: r.since(time.Unix(0, m.TimeNano)), Lane: svc, Kind: report.KindLifecycle, Text: text})
}

// sample reads the queen's registry every SampleInterval while the stack
// is up: a hive's or worker's last_seen that moved is a heartbeat the
// queen took in, a new state is a state change.
func (r *recorder) sample(ctx context.Context) {
	var q *rbeeclient.Client
	tick := time.NewTicker(SampleInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		r.mu.Lock()
		failed := r.failed
		r.mu.Unlock()
		if failed != nil && failed() {
			r.mu.Lock()
			if !r.failSeen {
				r.failSeen = true
				r.addLocked(report.Event{T: r.since(time.Now()), Kind: report.KindFailure, Text: report.DetectedText})
			}
			r.mu.Unlock()
		}
		u, err := r.h.URL("queen", 8500)
		if err != nil {
			continue // not running (or no queen in this topology)
		}
		if q == nil || q.BaseURL() != u {
			if q, err = r.h.signedClient(u); err != nil {
				return
			}
		}
		r.sampleOnce(ctx, q)
	}
}

func (r *recorder) sampleOnce(ctx context.Context, q *rbeeclient.Client) {
	ctx, cancel := context.WithTimeout(ctx, 2*SampleInterval)
	defer cancel()
	lanes := map[string]bool{}
	for _, s := range r.h.Services() {
		lanes[s] = true
	}
	laneOf := func(names ...string) string {
		for _, n := range names {
			if lanes[n] {
				return n
			}
		}
		return "queen"
	}
	if hs, err := q.Hives(ctx); err == nil {
		for _, hv := range hs {
			lane := laneOf(hv.Alias, hv.Hostname, "hive-"+hv.Alias)
			var seen time.Time
			if hv.LastSeen != nil {
				seen = *hv.LastSeen
			}
			r.registry("hive "+hv.Alias, lane, hv.State, seen)
		}
	}
	if ws, err := q.Workers(ctx); err == nil {
		for _, w := range ws {
			st := w.State
			if w.Stale {
				st += ", stale"
			}
			r.registry("worker "+w.WorkerID, laneOf(w.WorkerID, w.HiveID, "hive-"+w.HiveID), st, w.LastSeen)
		}
	}
}

// registry records one registry row's sample.
func (r *recorder) registry(row, lane, state string, seen time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !seen.IsZero() && seen.After(r.seen[row]) {
		if prev := r.seen[row]; !prev.IsZero() || seen.After(r.start) {
			r.addLocked(report.Event{T: r.since(seen), Lane: lane, Kind: report.KindHeartbeat, Text: row + " last_seen " + seen.UTC().Format("15:04:05.000")})
		}
		r.seen[row] = seen
	}
	if prev, ok := r.state[row]; !ok || prev != state {
		r.state[row] = state
		r.addLocked(report.Event{T: r.since(time.Now()), Lane: lane, Kind: report.KindState, Text: row + " " + state})
	}
}

// timeline returns what was recorded, with each service's log lines read
// now (Docker's timestamps, the last maxLogLines of each).
func (r *recorder) timeline(ctx context.Context, failed bool, test string) *report.Timeline {
	h := r.h
	lanes := h.Services()
	logs := make([][]report.LogLine, len(lanes))
	g, gctx := errgroup.WithContext(ctx)
	for i, svc := range lanes {
		g.Go(func() error {
			s, err := h.service(svc)
			if err != nil {
				return nil
			}
			logs[i] = r.logLines(gctx, s.id, svc)
			return nil
		})
	}
	_ = g.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	tl := &report.Timeline{Test: test, Run: h.name, Topology: h.topo.String(), Start: r.start, Duration: r.since(now), Failed: failed,
		Lanes: orderLanes(lanes), Events: append([]report.Event(nil), r.events...), Faults: append([]report.Span(nil), r.faults...),
		Jobs: append([]report.Job(nil), r.jobs...), Checks: append([]report.Check(nil), r.checks...), Links: append([]report.Link(nil), r.links...)}
	for i := range tl.Faults {
		if tl.Faults[i].Open {
			tl.Faults[i].End = tl.Duration
		}
	}
	for i := range tl.Jobs {
		if !tl.Jobs[i].Ended {
			tl.Jobs[i].End = tl.Duration
		}
	}
	for i := range tl.Checks {
		if !tl.Checks[i].Done {
			tl.Checks[i].End = tl.Duration
		}
	}
	for _, l := range logs {
		tl.Logs = append(tl.Logs, l...)
	}
	sort.SliceStable(tl.Logs, func(i, j int) bool { return tl.Logs[i].T < tl.Logs[j].T })
	if len(r.dropped) > 0 {
		tl.Dropped = map[string]int{}
		for k, n := range r.dropped {
			tl.Dropped[k] = n
		}
	}
	return tl
}

// orderLanes puts the queen first, then hives, then the rest, each sorted.
func orderLanes(svcs []string) []string {
	rank := func(s string) int {
		switch {
		case s == "queen":
			return 0
		case strings.HasPrefix(s, "hive"):
			return 1
		case strings.HasPrefix(s, "worker"):
			return 2
		}
		return 3
	}
	out := append([]string(nil), svcs...)
	sort.SliceStable(out, func(i, j int) bool {
		if rank(out[i]) != rank(out[j]) {
			return rank(out[i]) < rank(out[j])
		}
		return out[i] < out[j]
	})
	return out
}

func (r *recorder) logLines(ctx context.Context, id, svc string) []report.LogLine {
	rc, err := r.h.docker.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Timestamps: true, Tail: strconv.Itoa(maxLogLines)})
	if err != nil {
		return nil
	}
	defer rc.Close()
	var buf bytes.Buffer
	_, _ = stdcopy.StdCopy(&buf, &buf, rc)
	var out []report.LogLine
	sc := bufio.NewScanner(&buf)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		ts, text, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		if len(text) > maxLogLineLen {
			text = text[:maxLogLineLen] + "…"
		}
		out = append(out, report.LogLine{T: r.since(at), Lane: svc, Text: text})
	}
	return out
}

// writeReport writes report.html and timeline.json into the test's
// artifacts directory when the test failed, or always with
// RBEE_REPORT=always, and logs where it is.
func writeReport(t interface {
	Failed() bool
	Name() string
	Logf(string, ...any)
}, h *Harness) {
	if h == nil || h.tl == nil || (!t.Failed() && os.Getenv(ReportEnv) != "always") {
		return
	}
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if t.Failed() {
		h.tl.mu.Lock()
		seen := h.tl.failSeen
		h.tl.failSeen = true
		h.tl.mu.Unlock()
		if !seen {
			h.tl.add(report.Event{T: h.tl.since(time.Now()), Kind: report.KindFailure, Text: report.DetectedText})
		}
	}
	tl := h.tl.timeline(ctx, t.Failed(), t.Name())
	p, err := report.Write(ArtifactsDir(h.repoDir, t.Name()), tl)
	if err != nil {
		t.Logf("report: %v", err)
		return
	}
	t.Logf("report: %s (%d events, %d faults, %d jobs, %d log lines, in %v)", p, len(tl.Events), len(tl.Faults), len(tl.Jobs), len(tl.Logs), time.Since(t0).Round(time.Millisecond))
}
