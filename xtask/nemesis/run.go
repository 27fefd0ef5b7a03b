package nemesis

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/modelhub"
)

// DefaultModel is the model every hive serves during a run.
const DefaultModel = "rbee/tiny-ngram:model.bin"

// hiveDataDir is where a hive container's daemon keeps its catalog
// (docker/hive/entrypoint.sh).
const hiveDataDir = "/home/rbee/.local/share/rbee"

// Config is one nemesis run: a seed, how long faults are drawn for, the
// menu, the load, and the cluster's heartbeat timing (which bounds every
// wait for health).
type Config struct {
	Seed     uint64
	Duration time.Duration
	Menu     []Kind
	Timing   Timing
	Clients  int
	Model    string
	// Beat is the hives' and workers' heartbeat interval, StaleAfter the
	// queen's [heartbeat] stale_after.
	Beat, StaleAfter time.Duration
	// Slack is added to every wait derived from the heartbeat timing: a
	// container restart or a thawed process on a loaded two-core machine.
	Slack time.Duration
	// JobTimeout bounds one job of the load, submit to terminator.
	JobTimeout time.Duration
	Logf       func(format string, args ...any)

	menuErr error // a bad RBEE_NEMESIS_MENU, reported by Run
}

// Defaults fills what c leaves zero: the default menu and timing, four
// clients, the tiny model, the multi-hive topology's heartbeat timing
// (500 ms, stale_after 3 s), and bounds wide enough for a loaded machine.
func (c Config) Defaults() Config {
	if c.Menu == nil {
		c.Menu, c.menuErr = MenuFromEnv()
	}
	if c.Timing == (Timing{}) {
		c.Timing = DefaultTiming
	}
	if c.Clients == 0 {
		c.Clients = 4
	}
	if c.Model == "" {
		c.Model = DefaultModel
	}
	if c.Beat == 0 {
		c.Beat = 500 * time.Millisecond
	}
	if c.StaleAfter == 0 {
		c.StaleAfter = 3 * time.Second
	}
	if c.Slack == 0 {
		c.Slack = 60 * time.Second
	}
	if c.JobTimeout == 0 {
		// A forwarded stream that goes silent is resumed after at most
		// 2 × 15 s keepalive; twice that, plus retries, plus the slack.
		c.JobTimeout = 3 * time.Minute
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c
}

// healthTimeout bounds waiting for a hive or worker to be registered and
// fresh again: stale_after plus two beats, plus the slack.
func (c Config) healthTimeout() time.Duration { return c.StaleAfter + 2*c.Beat + c.Slack }

// System is the running cluster a schedule acts on.
type System struct {
	H    *integration.Harness
	Q    *client.Client
	Hist *checks.History
	cfg  Config

	mu      sync.Mutex
	workers map[string]string // hive → the worker spawned on it
}

// Result is what one run did and found.
type Result struct {
	Schedule   Schedule
	Ran        []string // each action with its planned and actual offset
	Jobs       []Job
	Violations []string
	Wall       time.Duration
	// Err is set (by Campaign) when the run could not be carried out.
	Err error
}

// Done counts the load's jobs that ended [DONE]; Failed the others.
func (r Result) Done() int {
	return len(slices.DeleteFunc(slices.Clone(r.Jobs), func(j Job) bool { return j.Err != nil || j.Kind != sse.Done }))
}

// Failed counts the load's jobs that did not end [DONE] (an [ERROR] while
// a hive is faulted is expected; the History check says whether it was
// consistent).
func (r Result) Failed() int { return len(r.Jobs) - r.Done() }

// Verdict is "pass" with no violation, "FAIL" with one, "ERROR" for a run
// that could not be carried out.
func (r Result) Verdict() string {
	if r.Err != nil {
		return "ERROR"
	}
	if len(r.Violations) == 0 {
		return "pass"
	}
	return "FAIL"
}

// Report is the failure report: the schedule (with its replay line), what
// ran when, and every violation.
func (r Result) Report() string {
	var b strings.Builder
	b.WriteString(r.Schedule.String())
	b.WriteString("\nran:\n")
	for _, l := range r.Ran {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	fmt.Fprintf(&b, "jobs: %d done, %d not done, of %d\n", r.Done(), r.Failed(), len(r.Jobs))
	if r.Err != nil {
		fmt.Fprintf(&b, "run error: %v\n", r.Err)
	}
	fmt.Fprintf(&b, "%d violations:\n", len(r.Violations))
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "  %s\n", v)
	}
	return strings.TrimRight(b.String(), "\n")
}

// Prepare gives every hive of h the model and one worker for it, through
// the queen, and returns the system ready for a schedule.
func Prepare(ctx context.Context, h *integration.Harness, cfg Config) (*System, error) {
	cfg = cfg.Defaults()
	q, err := h.Queen()
	if err != nil {
		return nil, err
	}
	sys := &System{H: h, Q: q, Hist: &checks.History{}, cfg: cfg, workers: map[string]string{}}
	if slices.ContainsFunc(cfg.Menu, func(k Kind) bool { return k.FromQueen }) {
		if err := h.PrepareToxics(ctx, "queen"); err != nil {
			return nil, err
		}
	}
	for _, hv := range TargetsOf(h.Services()).Hives {
		if err := checks.AwaitHiveState(ctx, q, hv, api.HiveOnline, cfg.healthTimeout()); err != nil {
			return nil, err
		}
		if err := sys.seedModel(ctx, hv); err != nil {
			return nil, err
		}
		if err := sys.spawn(ctx, hv); err != nil {
			return nil, err
		}
	}
	return sys, nil
}

// seedModel puts the model into hive's catalog exactly as a finished
// model_download leaves it (the multi-hive topology has no model hub) and
// checks that the hive reports it through the queen.
func (sys *System) seedModel(ctx context.Context, hive string) error {
	id := sys.cfg.Model
	i := slices.IndexFunc(modelhub.DefaultSpecs, func(s modelhub.Spec) bool { return s.ID == id })
	if i < 0 {
		return fmt.Errorf("seed model: %q is not one of the hub's default models", id)
	}
	f, err := modelhub.Build(modelhub.DefaultSpecs[i])
	if err != nil {
		return fmt.Errorf("seed model %s: %w", id, err)
	}
	org, rest, _ := strings.Cut(id, "/")
	repo, file, _ := strings.Cut(rest, ":")
	dir := hiveDataDir + "/models/" + org + "--" + repo + "--" + file
	meta, err := json.Marshal(api.Model{ID: id, Size: f.Size, SHA256: f.SHA256, Path: dir + "/model.bin", DownloadedAt: time.Now().UTC()})
	if err != nil {
		return err
	}
	res, err := sys.H.Exec(ctx, hive, []string{"sh", "-c", `set -e; mkdir -p "$DIR"; printf %s "$DATA" | base64 -d > "$DIR/model.bin.tmp"; mv "$DIR/model.bin.tmp" "$DIR/model.bin"; printf %s "$META" > "$DIR/metadata.json"`},
		integration.AsUser("rbee"), integration.ExecEnv("DIR="+dir, "DATA="+base64.StdEncoding.EncodeToString(f.Data), "META="+string(meta)))
	if err != nil {
		return fmt.Errorf("seed model on %s: %w", hive, err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("seed model on %s: exit %d: %s", hive, res.ExitCode, res.Stderr)
	}
	out, err := checks.EndedDone(sys.Hist.Run(ctx, sys.Q, api.JobRequest{Operation: api.OpModelGet, HiveID: hive, Model: id}))
	if err != nil {
		return fmt.Errorf("model_get on %s after seeding: %w", hive, err)
	}
	if m, err := checks.Result[api.Model](out); err != nil || m.SHA256 != f.SHA256 {
		return fmt.Errorf("model_get on %s after seeding: %+v, %v; want sha256 %s", hive, m, err, f.SHA256)
	}
	return nil
}

// spawn starts a worker on hive through the queen and waits until its own
// heartbeat has registered it, fresh and ready.
func (sys *System) spawn(ctx context.Context, hive string) error {
	cctx, cancel := context.WithTimeout(ctx, sys.cfg.JobTimeout)
	defer cancel()
	out, err := checks.EndedDone(sys.Hist.Run(cctx, sys.Q, api.JobRequest{Operation: api.OpWorkerSpawn, HiveID: hive, Model: sys.cfg.Model, Device: "cpu:0"}))
	if err != nil {
		return fmt.Errorf("worker_spawn on %s: %w", hive, err)
	}
	wp, err := checks.Result[api.WorkerProcess](out)
	if err != nil {
		return fmt.Errorf("worker_spawn on %s: %w", hive, err)
	}
	if _, err := checks.AwaitWorker(ctx, sys.Q, wp.WorkerID, sys.cfg.healthTimeout(), "fresh and ready", func(w api.WorkerInfo) bool { return !w.Stale && w.State == api.WorkerReady }); err != nil {
		return err
	}
	sys.mu.Lock()
	sys.workers[hive] = wp.WorkerID
	sys.mu.Unlock()
	return nil
}

// restoreHive waits for a restarted hive machine to be healthy and online
// again, and gives it a new worker (its old one died with the machine).
func (sys *System) restoreHive(ctx context.Context, hive string) error {
	if err := sys.H.WaitForHealthy(ctx, hive, sys.cfg.healthTimeout()); err != nil {
		return err
	}
	if err := checks.AwaitHiveState(ctx, sys.Q, hive, api.HiveOnline, sys.cfg.healthTimeout()); err != nil {
		return err
	}
	return sys.spawn(ctx, hive)
}

// action is one step of a schedule's execution.
type action struct {
	at   time.Duration
	heal bool
	ev   Event
}

func actions(s Schedule) []action {
	var as []action
	for _, e := range s.Events {
		as = append(as, action{e.At, false, e}, action{e.Heal(), true, e})
	}
	// Heals before injections at the same instant: the schedule never has
	// two faults on one target at once.
	sort.SliceStable(as, func(i, j int) bool {
		if as[i].at != as[j].at {
			return as[i].at < as[j].at
		}
		return as[i].heal && !as[j].heal
	})
	return as
}

// Run generates cfg.Seed's schedule for the targets of sys and runs it
// under the load; then it heals everything, waits for every hive and its
// worker to be healthy, runs one job on every hive, and checks the
// History. Violations are in the Result; the error is for a run that could
// not be carried out (a fault that could not be injected or healed).
func Run(ctx context.Context, sys *System) (res Result, err error) {
	cfg := sys.cfg
	if cfg.menuErr != nil {
		return res, cfg.menuErr
	}
	targets := TargetsOf(sys.H.Services())
	sched, err := Generate(cfg.Seed, cfg.Duration, targets, cfg.Menu, cfg.Timing)
	res.Schedule = sched
	if err != nil {
		return res, err
	}
	cfg.Logf("%s", sched)
	// On the timeline of the test's report: which seed this is and how to
	// replay it.
	sys.H.Note(fmt.Sprintf("nemesis seed %d (%s); replay: RBEE_FAULT_SEED=%d", cfg.Seed, sched.Kinds(), cfg.Seed), "")
	start := time.Now()
	defer func() { res.Wall = time.Since(start) }()

	stop := make(chan struct{})
	traffic := Traffic{Clients: cfg.Clients, Model: cfg.Model, Hives: targets.Hives, JobTimeout: cfg.JobTimeout}
	jobsDone := make(chan []Job, 1)
	go func() { jobsDone <- traffic.Run(ctx, sys.Q, sys.Hist, cfg.Seed, start, stop) }()

	active := map[string]Event{} // target → its fault, until healed
	var runErr error
	for _, a := range actions(sched) {
		if err := waitUntil(ctx, start.Add(a.at)); err != nil {
			runErr = err
			break
		}
		k, ok := Lookup(cfg.Menu, a.ev.Kind)
		if !ok {
			runErr = fmt.Errorf("schedule names kind %s, which is not in the menu", a.ev.Kind)
			break
		}
		t0 := time.Since(start)
		what, do := "inject", k.Inject
		if a.heal {
			what, do = "heal", k.Heal
		}
		err := do(ctx, sys, a.ev)
		line := fmt.Sprintf("%-6s %-28s planned %9s, ran %9s, took %s", what, a.ev.Fault(), offset(a.at), offset(t0), secs(time.Since(start)-t0))
		if err != nil {
			line += ": FAILED: " + err.Error()
		}
		res.Ran = append(res.Ran, line)
		cfg.Logf("nemesis: %s", line)
		if err != nil {
			runErr = fmt.Errorf("%s %s: %w", what, a.ev.Fault(), err)
			if !a.heal {
				// Half-injected: heal it with the rest.
				active[a.ev.Target] = a.ev
			}
			break
		}
		if a.heal {
			delete(active, a.ev.Target)
		} else {
			active[a.ev.Target] = a.ev
		}
	}
	// The load runs at least for the whole duration, also when the
	// schedule's actions finished early.
	if runErr == nil {
		runErr = waitUntil(ctx, start.Add(cfg.Duration))
	}
	close(stop)

	// Heal whatever is still active (after an error), then the harness's
	// whole network state, whatever the load is still doing.
	hctx := context.WithoutCancel(ctx)
	for _, tg := range slices.Sorted(maps.Keys(active)) {
		e := active[tg]
		k, _ := Lookup(cfg.Menu, e.Kind)
		err := k.Heal(hctx, sys, e)
		res.Ran = append(res.Ran, fmt.Sprintf("heal   %-28s after the schedule, at %s: %v", e.Fault(), offset(time.Since(start)), errOr(err, "ok")))
		runErr = errors.Join(runErr, err)
	}
	if err := sys.H.RecoverAll(hctx); err != nil {
		runErr = errors.Join(runErr, err)
	}
	res.Jobs = <-jobsDone
	if runErr != nil {
		return res, runErr
	}

	res.Violations = append(res.Violations, sys.awaitHealthy(ctx, targets)...)
	res.Violations = append(res.Violations, sys.liveness(ctx, targets)...)
	res.Violations = append(res.Violations, Check(ctx, sys.Q, sys.Hist, res.Jobs, sched)...)
	return res, nil
}

func errOr(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

// waitUntil blocks until t (a point of the schedule, not a state).
func waitUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}

// awaitHealthy waits, after the heal, for every hive to be online and its
// worker fresh and ready, within the heartbeat-derived bound.
func (sys *System) awaitHealthy(ctx context.Context, targets Targets) []string {
	var out []string
	for _, hv := range targets.Hives {
		if err := checks.AwaitHiveState(ctx, sys.Q, hv, api.HiveOnline, sys.cfg.healthTimeout()); err != nil {
			out = append(out, "health after heal: "+err.Error())
			continue
		}
		sys.mu.Lock()
		w := sys.workers[hv]
		sys.mu.Unlock()
		if _, err := checks.AwaitWorker(ctx, sys.Q, w, sys.cfg.healthTimeout(), "fresh and ready", func(w api.WorkerInfo) bool { return !w.Stale && w.State == api.WorkerReady }); err != nil {
			out = append(out, fmt.Sprintf("health after heal: %s's worker: %v", hv, err))
		}
	}
	return out
}

// liveness runs one inference pinned to every hive after the heal: each
// must end [DONE] with tokens, served on that hive.
func (sys *System) liveness(ctx context.Context, targets Targets) []string {
	var out []string
	for _, hv := range targets.Hives {
		cctx, cancel := context.WithTimeout(ctx, sys.cfg.JobTimeout)
		seed := uint64(1)
		o, err := checks.EndedDone(sys.Hist.Run(cctx, sys.Q, api.JobRequest{Operation: api.OpInfer, Model: sys.cfg.Model, HiveID: hv, Prompt: "Alice", MaxTokens: 8, Seed: &seed}))
		cancel()
		if err != nil {
			out = append(out, fmt.Sprintf("liveness after heal: infer on %s: %v", hv, err))
			continue
		}
		if text, err := client.Tokens(o); err != nil || text == "" {
			out = append(out, fmt.Sprintf("liveness after heal: infer %s on %s: tokens %q, %v", o.JobID, hv, text, err))
		} else if rt, err := checks.RoutedTo(o); err != nil || rt.Hive != hv {
			out = append(out, fmt.Sprintf("liveness after heal: infer %s pinned to %s ran on %+v, %v", o.JobID, hv, rt, err))
		}
	}
	return out
}
