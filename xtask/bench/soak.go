package bench

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/rbee-dev/rbee/xtask/dockerx"
	"github.com/rbee-dev/rbee/xtask/testrun"
)

// SuiteSpec is the whole Docker suite as `mage test:docker` runs it, with
// its JUnit file named name.
func SuiteSpec(name string) testrun.Spec {
	s := testrun.Spec{Name: name, Docker: true}
	for _, c := range testrun.Categories {
		s.Packages = append(s.Packages, c.Package)
	}
	return s
}

// Outcome is one top-level test's result in one run.
type Outcome struct {
	Test    string // package base name + "." + test name
	Failed  bool
	Message string // a failure's first telling line (file:line: message)
}

type junitFile struct {
	Suites []struct {
		Name     string `xml:"name,attr"`
		Failures int    `xml:"failures,attr"`
		Errors   int    `xml:"errors,attr"`
		Cases    []struct {
			Name    string     `xml:"name,attr"`
			Skipped *struct{}  `xml:"skipped"`
			Failure *junitText `xml:"failure"`
			Error   *junitText `xml:"error"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

type junitText struct {
	Message string `xml:"message,attr"`
	Body    string `xml:",chardata"`
}

// failureLine picks the line of a failure's output that says what went
// wrong: the last "file_test.go:N: …" line (t.Fatal/t.Error), else a panic
// or race report, else the first non-empty line; at most 300 characters.
func failureLine(t *junitText) string {
	if t == nil {
		return ""
	}
	lines := strings.Split(t.Body, "\n")
	pick := ""
	// The last file_test.go:N line: t.Log lines come before the t.Fatal.
	for i := len(lines) - 1; i >= 0 && pick == ""; i-- {
		if l := strings.TrimSpace(lines[i]); strings.Contains(l, "_test.go:") {
			pick = l
		}
	}
	for _, want := range []func(string) bool{
		func(l string) bool {
			return strings.HasPrefix(l, "panic:") || strings.Contains(l, "DATA RACE") || strings.Contains(l, "race detected")
		},
		func(l string) bool { return l != "" && !strings.HasPrefix(l, "=== ") && !strings.HasPrefix(l, "--- ") },
	} {
		if pick != "" {
			break
		}
		for _, l := range lines {
			if l = strings.TrimSpace(l); want(l) {
				pick = l
				break
			}
		}
	}
	if pick == "" {
		pick = strings.TrimSpace(t.Message)
	}
	if r := []rune(pick); len(r) > 300 {
		pick = string(r[:300]) + "…"
	}
	return pick
}

// ParseOutcomes reads gotestsum's JUnit XML into top-level test outcomes
// (skipped tests left out, subtests folded into their test). A package that
// failed without test cases (build error, panic before a test, timeout)
// becomes one failed "<pkg>.(package)" outcome.
func ParseOutcomes(data []byte) ([]Outcome, error) {
	var jf junitFile
	if err := xml.Unmarshal(data, &jf); err != nil {
		return nil, fmt.Errorf("JUnit XML: %w", err)
	}
	var out []Outcome
	for _, s := range jf.Suites {
		pkg := s.Name[strings.LastIndexByte(s.Name, '/')+1:]
		failed := map[string]bool{}
		msg := map[string]string{}
		var order []string
		for _, c := range s.Cases {
			top, _, _ := strings.Cut(c.Name, "/")
			if _, seen := failed[top]; !seen {
				if c.Skipped != nil && top == c.Name {
					continue
				}
				order = append(order, top)
				failed[top] = false
			}
			if c.Failure != nil || c.Error != nil {
				failed[top] = true
				if msg[top] == "" {
					msg[top] = failureLine(c.Failure)
					if msg[top] == "" {
						msg[top] = failureLine(c.Error)
					}
				}
			}
		}
		if len(order) == 0 && s.Failures+s.Errors > 0 {
			out = append(out, Outcome{Test: pkg + ".(package)", Failed: true, Message: "the package failed without test results (build error, panic or timeout)"})
		}
		for _, t := range order {
			out = append(out, Outcome{Test: pkg + "." + t, Failed: failed[t], Message: msg[t]})
		}
	}
	return out, nil
}

// Leftovers counts labelled containers, networks and volumes.
type Leftovers struct{ Containers, Networks, Volumes int }

func (l Leftovers) Total() int { return l.Containers + l.Networks + l.Volumes }

func (l Leftovers) String() string {
	return fmt.Sprintf("%d containers, %d networks, %d volumes", l.Containers, l.Networks, l.Volumes)
}

// labelled lists the resources labelled dev.rbee.project=rbee-netest with
// their owner pid and start time (0 and "" where unlabelled).
func labelled(ctx context.Context) ([]resource, error) {
	d, err := dockerx.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	f := dockerx.Filter(dockerx.Project)
	var out []resource
	add := func(kind, id string, labels map[string]string) {
		r := resource{kind: kind, id: id, start: labels[dockerx.LabelOwnerStart]}
		r.pid, _ = strconv.Atoi(labels[dockerx.LabelOwnerPID])
		out = append(out, r)
	}
	cs, err := d.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	for _, c := range cs.Items {
		add("container", c.ID, c.Labels)
	}
	ns, err := d.NetworkList(ctx, client.NetworkListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	for _, n := range ns.Items {
		add("network", n.ID, n.Labels)
	}
	vs, err := d.VolumeList(ctx, client.VolumeListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	for _, v := range vs.Items {
		add("volume", v.Name, v.Labels)
	}
	return out, nil
}

type resource struct {
	kind, id string
	pid      int
	start    string
}

// countLeftovers counts the labelled resources that are not in before (they
// existed when the run started: other people's stacks) and whose owner
// process is gone. Other engineers' running suites share the engine: their
// resources have a live owner and are not ours to count.
func countLeftovers(now []resource, before map[string]bool) Leftovers {
	var l Leftovers
	for _, r := range now {
		if before[r.kind+" "+r.id] || ownerAlive(r) {
			continue
		}
		switch r.kind {
		case "container":
			l.Containers++
		case "network":
			l.Networks++
		case "volume":
			l.Volumes++
		}
	}
	return l
}

// ownerAlive: the labelled owner pid runs and, if labelled, with the same start time.
func ownerAlive(r resource) bool {
	return dockerx.OwnerAlive(map[string]string{dockerx.LabelOwnerPID: strconv.Itoa(r.pid), dockerx.LabelOwnerStart: r.start})
}

func snapshot(rs []resource) map[string]bool {
	m := map[string]bool{}
	for _, r := range rs {
		m[r.kind+" "+r.id] = true
	}
	return m
}

// SuiteRun is one run of the whole Docker suite.
type SuiteRun struct {
	Wall      time.Duration
	Outcomes  []Outcome
	Err       error // the suite failed (some test, or the run)
	Leftovers Leftovers
	Files     []string // its JUnit files
	NoDocker  bool     // no Docker package ran: leftovers were not counted
}

// RunSuite runs the whole Docker suite once (gotestsum, JUnit into junitDir
// as name.xml), and counts what it left behind.
func RunSuite(ctx context.Context, root, junitDir, name string) (SuiteRun, error) {
	return runSpecs(ctx, root, junitDir, SuiteSpec(name))
}

// StressSpecs are what one stressed soak run runs: the unit tests with
// -race, the seven Docker suites, and the harness's own Docker tests with
// -race (its goroutines poll while tests change its state).
func StressSpecs(name string) []testrun.Spec {
	unit := testrun.Spec{Name: name + "-unit", Packages: []string{"./..."}, Race: true}
	suites := testrun.Spec{Name: name + "-docker", Docker: true}
	harness := testrun.Spec{Name: name + "-harness", Docker: true, Race: true}
	for _, c := range testrun.Categories {
		if c.Name == "harness" {
			harness.Packages = append(harness.Packages, c.Package)
		} else {
			suites.Packages = append(suites.Packages, c.Package)
		}
	}
	return []testrun.Spec{unit, suites, harness}
}

// runSpecs runs specs one after another (JUnit into junitDir), collects
// every top-level outcome, and counts what the run left behind.
func runSpecs(ctx context.Context, root, junitDir string, specs ...testrun.Spec) (SuiteRun, error) {
	var r SuiteRun
	r.NoDocker = true
	for _, s := range specs {
		r.NoDocker = r.NoDocker && !s.Docker
	}
	// Unit tests alone create no Docker resources and need no engine;
	// counting the engine's leftovers then would count other people's.
	var before []resource
	if !r.NoDocker {
		var err error
		if before, err = labelled(ctx); err != nil {
			return SuiteRun{}, err
		}
	}
	o := testrun.Options{Root: root, JUnitDir: junitDir}
	t0 := time.Now()
	var runErrs []error
	for _, spec := range specs {
		runErr := testrun.Run(ctx, o, spec)
		if runErr != nil {
			runErrs = append(runErrs, runErr)
		}
		data, err := os.ReadFile(o.JUnitPath(spec))
		if err != nil {
			return r, fmt.Errorf("%s: no JUnit results: %w (run: %v)", spec.Name, err, runErr)
		}
		outs, err := ParseOutcomes(data)
		if err != nil {
			return r, err
		}
		r.Outcomes = append(r.Outcomes, outs...)
		r.Files = append(r.Files, o.JUnitPath(spec))
	}
	r.Wall, r.Err = time.Since(t0), errors.Join(runErrs...)
	if r.NoDocker {
		return r, nil
	}
	after, err := labelled(ctx)
	if err != nil {
		return r, err
	}
	r.Leftovers = countLeftovers(after, snapshot(before))
	return r, nil
}

// FlakeRow is one test's failures over a soak.
type FlakeRow struct {
	Test        string
	Runs, Fails int
	First       string // the first failure's message
}

// Flakes tallies per-test failures over runs, failing tests first, then by name.
func Flakes(runs [][]Outcome) []FlakeRow {
	idx := map[string]*FlakeRow{}
	for _, run := range runs {
		for _, o := range run {
			r := idx[o.Test]
			if r == nil {
				r = &FlakeRow{Test: o.Test}
				idx[o.Test] = r
			}
			r.Runs++
			if o.Failed {
				r.Fails++
				if r.First == "" {
					r.First = o.Message
				}
			}
		}
	}
	out := make([]FlakeRow, 0, len(idx))
	for _, r := range idx {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		if (out[i].Fails > 0) != (out[j].Fails > 0) {
			return out[i].Fails > 0
		}
		return out[i].Test < out[j].Test
	})
	return out
}

// SoakTables renders a soak: one row per run, one per test that failed at
// least once, and the totals.
func SoakTables(runs []SuiteRun) []Table {
	perRun := Table{Title: "Soak runs", Header: []string{"run", "wall time", "tests", "failed", "leftovers (containers/networks/volumes)"}}
	var outs [][]Outcome
	left := 0
	for i, r := range runs {
		failed := 0
		for _, o := range r.Outcomes {
			if o.Failed {
				failed++
			}
		}
		outs = append(outs, r.Outcomes)
		left += r.Leftovers.Total()
		lo := fmt.Sprintf("%d/%d/%d", r.Leftovers.Containers, r.Leftovers.Networks, r.Leftovers.Volumes)
		if r.NoDocker {
			lo = "n/a (no Docker tests)"
		}
		perRun.Add(strconv.Itoa(i+1), Dur(r.Wall), strconv.Itoa(len(r.Outcomes)), strconv.Itoa(failed), lo)
	}
	rows := Flakes(outs)
	flaky := Table{Title: "Tests that failed at least once", Header: []string{"test", "failed runs", "runs", "first failure"}}
	nflaky := 0
	for _, r := range rows {
		if r.Fails == 0 {
			continue
		}
		nflaky++
		flaky.Add(r.Test, strconv.Itoa(r.Fails), strconv.Itoa(r.Runs), strings.ReplaceAll(r.First, "|", "\\|"))
	}
	if nflaky == 0 {
		flaky.Notes = append(flaky.Notes, fmt.Sprintf("none: every one of %d tests passed in every run", len(rows)))
	}
	perRun.Notes = append(perRun.Notes,
		fmt.Sprintf("%d runs, %d distinct tests, %d failed at least once; leftovers over all runs: %d", len(runs), len(rows), nflaky, left),
		"leftovers: resources labelled dev.rbee.project=rbee-netest, created during the run, whose owner process is gone (other engineers' live stacks on the same engine are not counted)")
	return []Table{perRun, flaky}
}

// SoakOptions say how to soak.
type SoakOptions struct {
	Runs int // how many times [required, > 0]
	// Stress: every run is the unit tests (-race), the Docker suites and
	// the harness's own Docker tests (-race), while a CPU burner keeps
	// every core busy (Burn). Without it, a run is the whole Docker suite.
	Stress bool
	// Burners is the number of spinning threads under Stress [one per CPU].
	Burners int
	// Only, when set, limits every run to these packages: Docker
	// categories and unit package patterns (SoakSpecs).
	Only []string
	// Run is go test's -run pattern for every package ("" = all tests).
	Run string
}

// Soak runs the whole Docker suite n times and returns each run. A failing
// run does not stop the soak; a run that produced no results does.
func Soak(ctx context.Context, root string, n int, logf func(string, ...any)) ([]SuiteRun, error) {
	return SoakWith(ctx, root, SoakOptions{Runs: n}, logf)
}

// SoakWith runs a soak as o says and returns each run.
func SoakWith(ctx context.Context, root string, o SoakOptions, logf func(string, ...any)) ([]SuiteRun, error) {
	n := o.Runs
	if n <= 0 {
		return nil, fmt.Errorf("soak: run count %d must be positive", n)
	}
	dir := filepath.Join(root, "test-results", "soak-"+time.Now().UTC().Format("20060102-150405"))
	if _, err := SoakSpecs("soak", o); err != nil {
		return nil, err
	}
	if o.Stress {
		b, err := StartStress(o.Burners)
		if err != nil {
			return nil, err
		}
		logf("stress: %s on %d CPUs for the whole soak", b, runtime.NumCPU())
		defer func() {
			blocks, wall := b.Stop()
			logf("stress: %s stopped after %s (%d blocks of work counted)", b.Kind(), Dur(wall), blocks)
		}()
	}
	var runs []SuiteRun
	for i := 0; i < n; i++ {
		logf("soak run %d/%d (JUnit: %s)", i+1, n, dir)
		specs, err := SoakSpecs(fmt.Sprintf("soak-%d", i+1), o)
		if err != nil {
			return runs, err
		}
		r, err := runSpecs(ctx, root, dir, specs...)
		if err != nil {
			return runs, err
		}
		runs = append(runs, r)
		logf("soak run %d/%d: %s, %d tests, leftovers %s, run error: %v", i+1, n, Dur(r.Wall), len(r.Outcomes), r.Leftovers, r.Err)
	}
	return runs, nil
}

// SoakReport runs Soak, prints its tables and appends them, with the
// machine's description, to root/docs/BENCHMARKS.md. It fails when a test
// failed in any run or anything was left behind.
func SoakReport(ctx context.Context, root string, o SoakOptions, w io.Writer) error {
	logf := func(format string, args ...any) {
		fmt.Fprintf(w, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
	m := DescribeMachine(ctx)
	runs, err := SoakWith(ctx, root, o, logf)
	if len(runs) == 0 {
		return err
	}
	tables := SoakTables(runs)
	var b strings.Builder
	what := "the whole Docker suite"
	if o.Stress {
		what = "unit tests with -race, the Docker suites, the harness's Docker tests with -race,"
	}
	if sub := describeSubset(o); sub != "" {
		what = sub + ","
		if o.Stress {
			what = sub + " (unit and harness tests with -race),"
		}
	}
	if o.Stress {
		what = "under CPU stress (" + stressKind(burners(o)) + "), " + what
	}
	at := ""
	if !runs[0].NoDocker {
		p, _ := testrun.DockerParallel()
		tp, _ := testrun.DockerTestParallel()
		at = fmt.Sprintf(" (%d Docker packages at once, %d tests of each)", p, tp)
	}
	fmt.Fprintf(&b, "## Soak %s: %s %d times%s\n\n", m.Date.Format("2006-01-02 15:04 MST"), what, len(runs), at)
	b.WriteString(m.Table().Markdown())
	for _, t := range tables {
		_ = t.Text(w)
		b.WriteString("\n" + t.Markdown())
	}
	if err != nil {
		fmt.Fprintf(&b, "\nThe soak stopped early: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
	}
	fmt.Fprintf(&b, "\nLoad average at start %s, at end %s.\n", m.LoadAvg, orUnknown(LoadNow()))
	out := filepath.Join(root, "docs", "BENCHMARKS.md")
	if werr := AppendSection(out, b.String()); werr != nil {
		return werr
	}
	fmt.Fprintf(w, "\nappended to %s\n", out)
	writeSoakReport(root, runs, w)
	if err != nil {
		return err
	}
	var bad []string
	for _, r := range Flakes(outcomes(runs)) {
		if r.Fails > 0 {
			bad = append(bad, fmt.Sprintf("%s failed %d/%d", r.Test, r.Fails, r.Runs))
		}
	}
	for i, r := range runs {
		if r.Leftovers.Total() > 0 {
			bad = append(bad, fmt.Sprintf("run %d left %s", i+1, r.Leftovers))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("soak: %s", strings.Join(bad, "; "))
	}
	return nil
}

func burners(o SoakOptions) int {
	if o.Burners > 0 {
		return o.Burners
	}
	return runtime.NumCPU()
}

func outcomes(runs []SuiteRun) [][]Outcome {
	out := make([][]Outcome, len(runs))
	for i, r := range runs {
		out[i] = r.Outcomes
	}
	return out
}
