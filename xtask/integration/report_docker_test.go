//go:build docker

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/report"
)

// failingTB is a testing.TB whose failures stay its own: the scenario
// fails it on purpose while the real test goes on to read the report.
// Fatal ends the scenario's goroutine; Cleanup funcs run in runCleanups.
type failingTB struct {
	testing.TB
	name string

	mu       sync.Mutex
	failed   bool
	msgs     []string
	cleanups []func()
}

func (f *failingTB) Name() string { return f.name }
func (f *failingTB) Helper()      {}
func (f *failingTB) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}
func (f *failingTB) Fail() { f.mu.Lock(); f.failed = true; f.mu.Unlock() }
func (f *failingTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	f.failed = true
	f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
	f.mu.Unlock()
	f.TB.Logf("(scenario) FAIL: "+format, args...)
}
func (f *failingTB) Error(args ...any)                 { f.Errorf("%s", fmt.Sprint(args...)) }
func (f *failingTB) Fatalf(format string, args ...any) { f.Errorf(format, args...); runtime.Goexit() }
func (f *failingTB) Fatal(args ...any)                 { f.Error(args...); runtime.Goexit() }
func (f *failingTB) FailNow()                          { f.Fail(); runtime.Goexit() }
func (f *failingTB) Log(args ...any)                   { f.TB.Log(append([]any{"(scenario)"}, args...)...) }
func (f *failingTB) Logf(format string, args ...any)   { f.TB.Logf("(scenario) "+format, args...) }
func (f *failingTB) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

// run runs scenario as a test body would run (Fatal ends it), then its
// cleanups, last registered first.
func (f *failingTB) run(scenario func(tb testing.TB)) {
	done := make(chan struct{})
	go func() { defer close(done); scenario(f) }()
	<-done
	for {
		f.mu.Lock()
		n := len(f.cleanups)
		if n == 0 {
			f.mu.Unlock()
			return
		}
		fn := f.cleanups[n-1]
		f.cleanups = f.cleanups[:n-1]
		f.mu.Unlock()
		fn()
	}
}

// browser starts headless Chromium (Debian's chromium package, or
// $RBEE_CHROMIUM) for chromedp. The browser lives as long as the returned
// context, so its start is bounded by a timer that cancels it, and every
// later call by browse's deadline.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := os.Getenv("RBEE_CHROMIUM")
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path != "" {
			break
		}
		path, _ = exec.LookPath(name)
	}
	if path == "" {
		t.Fatal("no Chromium: install Debian's chromium package (apt-get install -y chromium; .ci/run does) or set RBEE_CHROMIUM")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1400, 1000))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelB := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelB(); cancelA() })
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(bctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start %s: %v", path, err)
		}
	case <-time.After(2 * time.Minute): // a loaded machine starts it slowly
		cancelB()
		t.Fatalf("start %s: not up after 2m", path)
	}
	return bctx
}

// browse runs steps in the browser with a deadline.
func browse(t *testing.T, bctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

// browserValue runs one action that returns a value, with a deadline.
func browserValue[T any](t *testing.T, bctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// reportDOM is what the test reads from a rendered report.
type reportDOM struct {
	Lanes        []string  `json:"lanes"`
	Faults       []string  `json:"faults"`      // data-text@data-lane of each shaded rect
	FaultRange   []float64 `json:"fault_range"` // x from, x to of the first one (rendered boxes)
	MarkerX      float64   `json:"marker_x"`
	Marker       string    `json:"marker"`
	FailureText  string    `json:"failure_text"`
	ActiveFaults []string  `json:"active_faults"`
	FailedChecks int       `json:"failed_checks"`
	Heartbeats   int       `json:"heartbeats"`
	States       []string  `json:"states"`
	Jobs         int       `json:"jobs"`
	LogsShown    []float64 `json:"logs_shown"`
	LogsTotal    int       `json:"logs_total"`
	Window       []float64 `json:"window"`
}

const readReportDOM = `(() => {
 const q = s => [...document.querySelectorAll(s)];
 const box = e => e.getBoundingClientRect();
 const f = q('#timeline rect.fault-span'), m = document.querySelector('#failure-marker line');
 return JSON.stringify({
  lanes: q('#timeline g.lane').map(g => g.dataset.lane),
  faults: f.map(r => r.dataset.text + '@' + r.dataset.lane),
  fault_range: f.length ? [box(f[0]).left, box(f[0]).right] : [],
  marker_x: m ? box(m).left + box(m).width / 2 : -1,
  marker: document.querySelector('#failure-marker text')?.textContent || '',
  failure_text: document.getElementById('failure-text')?.textContent || '',
  active_faults: q('#faults-at-failure li.active-fault > b').map(b => b.textContent),
  failed_checks: q('#timeline rect.check.failed').length,
  heartbeats: q('#timeline line.hb').length,
  states: q('#timeline path.state title').map(t => t.textContent),
  jobs: q('#timeline line.job').length,
  logs_shown: q('#logs tr:not(.hidden)').map(r => +r.dataset.t),
  logs_total: q('#logs tr').length,
  window: [+document.getElementById('from').value, +document.getElementById('to').value],
 });
})()`

func readDOM(t *testing.T, bctx context.Context) reportDOM {
	t.Helper()
	js := browserValue(t, bctx, "read the report's DOM", chromedp.Evaluate[string](readReportDOM))
	var d reportDOM
	if err := json.Unmarshal([]byte(js), &d); err != nil {
		t.Fatalf("DOM answer %q: %v", js, err)
	}
	return d
}

// TestFailureReportInBrowser: a harness scenario that fails on purpose
// with a fault in force (hive→queen blocked, then an await for a heartbeat
// that cannot arrive) leaves report.html in its artifacts; headless
// Chromium renders the lanes, the fault span over both lanes, the failing
// check pinned inside the fault's span, and the log window around it; a
// screenshot of the first screen is saved beside the report.
func TestFailureReportInBrowser(t *testing.T) {
	t.Parallel()
	// The scenario's own Start would skip under another RBEE_TOPOLOGY shard,
	// inside failingTB, where a skip reads as the scenario not failing.
	if why, err := shardSkip(Localhost); err != nil {
		t.Fatal(err)
	} else if why != "" {
		t.Skip(why)
	}
	const hive = "hive-localhost"
	ft := &failingTB{TB: t, name: t.Name() + "/failing-scenario"}
	var repoDir string
	var services []string
	block := Block(hive, "queen")
	ft.run(func(tb testing.TB) {
		h := Start(tb, Localhost)
		repoDir, services = h.repoDir, h.Services()
		q := h.MustQueen(tb)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := checks.AwaitHiveState(ctx, q, hive, api.HiveOnline, 30*time.Second); err != nil {
			t.Errorf("before the fault: %v", err) // the real test: the scenario must fail only where meant to
			tb.FailNow()
		}
		var hist checks.History
		if _, err := hist.Run(ctx, q, api.JobRequest{Operation: api.OpHiveStatus, Alias: hive}); err != nil {
			t.Errorf("hive_status before the fault: %v", err)
		}
		h.MustInject(tb, block)
		blocked := time.Now()
		_, _ = hist.Run(ctx, q, api.JobRequest{Operation: api.OpHiveStatus, Alias: hive})
		// Six heartbeat intervals past the block: no heartbeat gets through
		// while it is in force, so this await fails and the test with it.
		err := checks.Await(ctx, 4*time.Second, "a heartbeat of "+hive+" after the block", func(ctx context.Context) (bool, string, error) {
			hv, err := checks.Hive(ctx, q, hive)
			if err != nil || hv.LastSeen == nil {
				return false, "", err
			}
			return hv.LastSeen.After(blocked.Add(3 * time.Second)), fmt.Sprintf("%s is %s, last_seen %s", hive, hv.State, hv.LastSeen.Format("15:04:05.000")), nil
		})
		if err == nil {
			t.Errorf("a heartbeat of %s reached the queen through the block", hive)
			return
		}
		tb.Fatalf("deliberate failure: %v", err)
	})
	if !ft.Failed() || len(ft.msgs) == 0 || !strings.Contains(ft.msgs[len(ft.msgs)-1], "deliberate failure") {
		t.Fatalf("the scenario did not fail as meant: %q", ft.msgs)
	}
	dir := ArtifactsDir(repoDir, ft.Name())
	page := filepath.Join(dir, report.HTMLName)
	if _, err := os.Stat(page); err != nil {
		t.Fatalf("no report of the failed scenario: %v", err)
	}
	t.Logf("report: %s", page)

	bctx := browser(t)
	browse(t, bctx, "open "+page, chromedp.Navigate("file://"+page), chromedp.WaitVisible(chromedp.CSS("#timeline")))
	d := readDOM(t, bctx)
	png := browserValue(t, bctx, "screenshot", chromedp.CaptureScreenshot())
	shot := filepath.Join(dir, "report.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes); DOM: %d lanes %v, faults %v, marker %q at x=%.0f, fault x %v, %d heartbeats, states %v, %d jobs, %d of %d log lines in window %v",
		shot, len(png), len(d.Lanes), d.Lanes, d.Faults, d.Marker, d.MarkerX, d.FaultRange, d.Heartbeats, d.States, d.Jobs, len(d.LogsShown), d.LogsTotal, d.Window)

	if strings.Join(d.Lanes, ",") != strings.Join(orderLanes(services), ",") {
		t.Errorf("lanes %v, want one per service %v", d.Lanes, orderLanes(services))
	}
	want := map[string]bool{block.parts[0].String() + "@" + hive: false, block.parts[0].String() + "@queen": false}
	for _, f := range d.Faults {
		if _, ok := want[f]; ok {
			want[f] = true
		}
	}
	for k, seen := range want {
		if !seen {
			t.Errorf("no fault span %s; have %v", k, d.Faults)
		}
	}
	if !strings.Contains(d.Marker, "failure at") || !strings.Contains(d.FailureText, "a heartbeat of "+hive+" after the block") {
		t.Errorf("failing check not pinned: marker %q, text %q", d.Marker, d.FailureText)
	}
	if d.FailedChecks < 1 {
		t.Error("no failed check drawn on the test's row")
	}
	if len(d.FaultRange) != 2 || d.MarkerX < d.FaultRange[0] || d.MarkerX > d.FaultRange[1]+1 {
		t.Errorf("the failure (x=%.0f) is not drawn inside the fault's span %v", d.MarkerX, d.FaultRange)
	}
	if len(d.ActiveFaults) != 1 || d.ActiveFaults[0] != block.parts[0].String() {
		t.Errorf("faults in force at the failure: %v, want [%s]", d.ActiveFaults, block.parts[0])
	}
	if d.Heartbeats < 2 || d.Jobs != 2 {
		t.Errorf("%d heartbeats and %d jobs drawn, want ≥ 2 and 2", d.Heartbeats, d.Jobs)
	}
	if len(d.LogsShown) == 0 {
		t.Errorf("the log window %v shows none of %d lines", d.Window, d.LogsTotal)
	}
	for _, ts := range d.LogsShown {
		if ts < d.Window[0] || ts > d.Window[1] {
			t.Errorf("log line at %.3f s shown outside the window %v", ts, d.Window)
			break
		}
	}
	// The window follows a click on the "all" button: every line shows.
	browse(t, bctx, "show all logs", chromedp.Click(chromedp.CSS("#win-all")))
	if d2 := readDOM(t, bctx); len(d2.LogsShown) != d2.LogsTotal || d2.LogsTotal == 0 {
		t.Errorf("after 'all': %d of %d lines shown", len(d2.LogsShown), d2.LogsTotal)
	}
}

// TestRunReportInBrowser: the run overview (test-results/report.html)
// rendered in headless Chromium lists the failed test first with its
// message, draws one duration bar per test, and its link opens that test's
// report.html with the timeline drawn; a screenshot is saved beside it.
func TestRunReportInBrowser(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	arts, res := filepath.Join(dir, "artifacts"), filepath.Join(dir, "test-results")
	if err := os.MkdirAll(res, 0o755); err != nil {
		t.Fatal(err)
	}
	const failed, msg = "TestPartitionHeals", "partition_test.go:77: hive hive-1 online: not true within 10s"
	junit := `<?xml version="1.0" encoding="UTF-8"?><testsuites>
 <testsuite name="github.com/rbee-dev/rbee/xtask/tests/docker/failure" tests="2" failures="1" time="33.5">
  <testcase classname="failure" name="` + failed + `" time="21.5"><failure message="Failed">=== RUN ` + failed + `
    ` + msg + `
--- FAIL: ` + failed + `</failure></testcase>
  <testcase classname="failure" name="TestCrashRecovery" time="12"></testcase>
 </testsuite>
 <testsuite name="github.com/rbee-dev/rbee/xtask/tests/docker/heartbeat" tests="1" failures="0" time="3">
  <testcase classname="heartbeat" name="TestUpdates" time="3"></testcase>
 </testsuite></testsuites>`
	jf := filepath.Join(res, "docker.xml")
	if err := os.WriteFile(jf, []byte(junit), 0o644); err != nil {
		t.Fatal(err)
	}
	tl := &report.Timeline{Test: failed, Topology: "localhost", Start: time.Now(), Duration: 20, Failed: true,
		Lanes:  []string{"queen", "hive-localhost"},
		Events: []report.Event{{T: 19, Kind: report.KindFailure, Text: msg}}}
	if _, err := report.Write(filepath.Join(arts, failed), tl); err != nil {
		t.Fatal(err)
	}
	page, err := report.WriteRun(report.RunInput{Title: "rbee test run", Files: []string{jf}, Artifacts: arts, Out: filepath.Join(res, "report.html")})
	if err != nil {
		t.Fatal(err)
	}

	bctx := browser(t)
	browse(t, bctx, "open "+page, chromedp.Navigate("file://"+page), chromedp.WaitVisible(chromedp.CSS("#failures")))
	type runDOM struct {
		First, Message, Link string
		Bars                 []string
		Rows                 int
	}
	dom := browserValue(t, bctx, "read the run overview", chromedp.Evaluate[runDOM](`(() => {
		const row = document.querySelector('#failures tr.failed');
		const link = row && row.querySelector('a.report-link');
		return {
			First: row ? row.cells[1].textContent : '',
			Message: row ? row.querySelector('.msg').textContent : '',
			Link: link ? link.href : '',
			Bars: [...document.querySelectorAll('#durations g.bar')].map(g => g.dataset.test + ':' + g.getAttribute('class')),
			Rows: document.querySelectorAll('#tests tr').length - 1,
		};
	})()`))
	png := browserValue(t, bctx, "screenshot", chromedp.CaptureScreenshot())
	if err := os.WriteFile(filepath.Join(res, "report.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("run overview %s: first failure %q (%q), link %s, bars %v, %d rows; screenshot %d bytes", page, dom.First, dom.Message, dom.Link, dom.Bars, dom.Rows, len(png))
	if dom.First != failed || !strings.Contains(dom.Message, "not true within 10s") {
		t.Errorf("first failure row %q %q; want %s with its message", dom.First, dom.Message, failed)
	}
	if dom.Rows != 3 || len(dom.Bars) != 3 {
		t.Errorf("%d test rows and bars %v; want 3 of each", dom.Rows, dom.Bars)
	}
	wantBar := map[string]bool{failed + ":bar failed": false, "TestCrashRecovery:bar passed": false, "TestUpdates:bar passed": false}
	for _, b := range dom.Bars {
		if _, ok := wantBar[b]; ok {
			wantBar[b] = true
		}
	}
	for b, seen := range wantBar {
		if !seen {
			t.Errorf("no duration bar %q in %v", b, dom.Bars)
		}
	}
	if !strings.HasSuffix(dom.Link, "/artifacts/"+failed+"/"+report.HTMLName) {
		t.Fatalf("failure links %q; want its report.html", dom.Link)
	}
	browse(t, bctx, "follow the report link", chromedp.Click(chromedp.CSS("#failures a.report-link")), chromedp.WaitVisible(chromedp.CSS("#timeline")))
	if loc := browserValue(t, bctx, "location", chromedp.Location()); loc != dom.Link {
		t.Errorf("after the click the browser shows %s; want %s", loc, dom.Link)
	}
}
