// Package testrun runs the project's test suites the way CI and a person
// do: go test through gotestsum (a Go tool dependency of this module),
// JUnit XML per run in one directory, and one summary table at the end —
// category, tests run, passed, failed, skipped, duration — closed by a
// plain "total: N passed, N failed, N skipped" line.
//
// The Mage test targets (magefile.go) are thin wrappers around Run and
// Summarize.
package testrun

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Category is one Docker suite: a package under xtask/tests/docker/.
type Category struct {
	Name    string // "httpcomm"
	Package string // "./xtask/tests/docker/httpcomm/"
	Title   string // "HTTP communication"
}

// Categories are the seven Docker suites (HTTP communication first, the
// full system last), the security suite, and the harness's own Docker
// tests, in the order reports list them.
var Categories = []Category{
	{"httpcomm", "./xtask/tests/docker/httpcomm/", "HTTP communication"},
	{"sshcomm", "./xtask/tests/docker/sshcomm/", "SSH communication"},
	{"heartbeat", "./xtask/tests/docker/heartbeat/", "Heartbeats"},
	{"lifecycle", "./xtask/tests/docker/lifecycle/", "Hive lifecycle"},
	{"workerlifecycle", "./xtask/tests/docker/workerlifecycle/", "Worker lifecycle"},
	{"failure", "./xtask/tests/docker/failure/", "Failure scenarios"},
	{"e2e", "./xtask/tests/docker/e2e/", "End-to-end workflows"},
	{"security", "./xtask/tests/docker/security/", "Security (rogue container)"},
	{"harness", "./xtask/integration/", "DockerTestHarness self-tests"},
}

// FindCategory returns the category called name.
func FindCategory(name string) (Category, error) {
	var names []string
	for _, c := range Categories {
		if c.Name == name {
			return c, nil
		}
		names = append(names, c.Name)
	}
	return Category{}, fmt.Errorf("unknown test category %q (have %s)", name, strings.Join(names, ", "))
}

// Spec is one go test invocation.
type Spec struct {
	Name     string            // JUnit file stem: <JUnitDir>/<Name>.xml
	Packages []string          // package patterns
	Docker   bool              // -tags docker, one package at a time
	Run      string            // -run pattern ("" = all)
	Env      map[string]string // added to the environment
	Timeout  time.Duration     // go test -timeout (default 30m)
	Verbose  bool              // gotestsum's standard-verbose format
	Race     bool              // -race
	Parallel int               // Docker packages at once (go test -p); 0: DockerParallel()
	// TestParallel is how many t.Parallel tests of one Docker package run
	// at once (go test -parallel); 0: DockerTestParallel().
	TestParallel int
	// Collapse, when set, sums the spec's packages into one summary row
	// with this name (the unit tests of many packages); else one row per
	// package.
	Collapse string
}

// Options say where things go.
type Options struct {
	Root     string    // repository root (go.mod)
	JUnitDir string    // default <Root>/test-results, or $RBEE_JUNIT_DIR
	Stdout   io.Writer // default os.Stdout
	Stderr   io.Writer // default os.Stderr
}

func (o *Options) fill() {
	if o.JUnitDir == "" {
		o.JUnitDir = os.Getenv("RBEE_JUNIT_DIR")
	}
	if o.JUnitDir == "" {
		o.JUnitDir = filepath.Join(o.Root, "test-results")
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
}

// JUnitPath returns where Run writes spec's JUnit XML.
func (o Options) JUnitPath(spec Spec) string {
	o.fill()
	return filepath.Join(o.JUnitDir, spec.Name+".xml")
}

// Run runs one spec. A failing test is an error; the JUnit file is
// written either way.
func Run(ctx context.Context, o Options, s Spec) error {
	o.fill()
	if s.Name == "" || len(s.Packages) == 0 {
		return errors.New("testrun: a spec needs a name and packages")
	}
	if err := os.MkdirAll(o.JUnitDir, 0o755); err != nil {
		return err
	}
	format := "testname"
	if s.Verbose {
		format = "standard-verbose"
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Minute
	}
	args := []string{"tool", "gotestsum", "--junitfile", o.JUnitPath(s), "--junitfile-project-name", s.Name,
		"--format", format, "--", "-count=1", "-timeout", timeout.String()}
	if s.Docker {
		// Packages run side by side (each test's stack is isolated), as
		// many as the engine and the cores sustain: RBEE_DOCKER_PARALLEL.
		p := s.Parallel
		if p <= 0 {
			var err error
			if p, err = DockerParallel(); err != nil {
				return err
			}
		}
		tp := s.TestParallel
		if tp <= 0 {
			var err error
			if tp, err = DockerTestParallel(); err != nil {
				return err
			}
		}
		args = append(args, "-tags", "docker", "-p", strconv.Itoa(p), "-parallel", strconv.Itoa(tp))
	}
	if s.Race {
		args = append(args, "-race")
	}
	if s.Run != "" {
		args = append(args, "-run", s.Run)
	}
	args = append(args, s.Packages...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = o.Root
	cmd.Stdout, cmd.Stderr = o.Stdout, o.Stderr
	cmd.Env = os.Environ()
	for k, v := range s.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	return nil
}

// Row is one line of the summary table.
type Row struct {
	Category                       string
	Tests, Passed, Failed, Skipped int
	Duration                       time.Duration
}

type junitSuites struct {
	Suites []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Errors   int         `xml:"errors,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name    string    `xml:"name,attr"`
	Skipped *struct{} `xml:"skipped"`
	Failure *struct{} `xml:"failure"`
}

// ReadJUnit returns one row per package of a gotestsum JUnit file, named
// by the package's last path element. Only top-level tests count (a
// subtest is part of its test), as the README's suite table counts them.
func ReadJUnit(file string) ([]Row, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var js junitSuites
	if err := xml.Unmarshal(data, &js); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var rows []Row
	for _, s := range js.Suites {
		r := Row{Category: categoryOf(s.Name)}
		if secs, err := strconv.ParseFloat(s.Time, 64); err == nil {
			r.Duration = time.Duration(secs * float64(time.Second))
		}
		for _, c := range s.Cases {
			if strings.Contains(c.Name, "/") {
				continue
			}
			r.Tests++
			switch {
			case c.Failure != nil:
				r.Failed++
			case c.Skipped != nil:
				r.Skipped++
			default:
				r.Passed++
			}
		}
		if r.Tests == 0 && s.Failures+s.Errors > 0 {
			r.Failed = s.Failures + s.Errors // a package that failed to build or panicked
			r.Tests = r.Failed
		}
		if r.Tests > 0 {
			rows = append(rows, r)
		}
	}
	return rows, nil
}

// Collapse sums rows into one named row (the unit tests of many packages).
func Collapse(name string, rows []Row) Row {
	out := Row{Category: name}
	for _, r := range rows {
		out.Tests += r.Tests
		out.Passed += r.Passed
		out.Failed += r.Failed
		out.Skipped += r.Skipped
		out.Duration += r.Duration
	}
	return out
}

// PrintSummary writes the table and the closing totals line.
func PrintSummary(w io.Writer, rows []Row) Row {
	rows = append([]Row(nil), rows...)
	order := map[string]int{}
	for i, c := range Categories {
		order[c.Name] = i + 1
	}
	key := func(r Row) int { return order[strings.Fields(r.Category)[0]] }
	sort.SliceStable(rows, func(a, b int) bool { return key(rows[a]) < key(rows[b]) })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "category\ttests\tpassed\tfailed\tskipped\tduration\t")
	total := Collapse("total", rows)
	for _, r := range append(rows, total) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t\n", r.Category, r.Tests, r.Passed, r.Failed, r.Skipped, r.Duration.Round(100*time.Millisecond))
	}
	tw.Flush()
	fmt.Fprintf(w, "total: %d passed, %d failed, %d skipped\n", total.Passed, total.Failed, total.Skipped)
	return total
}

// RunAll runs the specs in order (a failing spec does not stop the next),
// prints the summary table of all of them, and returns an error if any
// spec failed or wrote no results.
func RunAll(ctx context.Context, o Options, specs ...Spec) error {
	o.fill()
	var rows []Row
	var failed []string
	var split []Spec
	for _, s := range specs {
		split = append(split, SplitRace(s)...)
	}
	for _, s := range split {
		if err := Run(ctx, o, s); err != nil {
			failed = append(failed, err.Error())
		}
		got, err := ReadJUnit(o.JUnitPath(s))
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: no results: %v", s.Name, err))
			continue
		}
		if s.Collapse != "" {
			got = []Row{Collapse(s.Collapse, got)}
		} else if label, ok := s.Env["DOCKER_HOST"]; ok {
			for i := range got {
				got[i].Category += " (via " + label + ")"
			}
		}
		rows = append(rows, got...)
	}
	fmt.Fprintf(o.Stdout, "\nJUnit XML: %s\n", o.JUnitDir)
	total := PrintSummary(o.Stdout, rows)
	writeRunReport(o, specs)
	if total.Tests == 0 && len(failed) == 0 {
		failed = append(failed, "no tests ran")
	}
	if len(failed) > 0 {
		return fmt.Errorf("tests failed:\n  %s", strings.Join(failed, "\n  "))
	}
	return nil
}

// categoryOf names a package's row: its category name when it is one of
// Categories (xtask/integration is "harness"), else its last path element.
func categoryOf(pkg string) string {
	for _, c := range Categories {
		if strings.HasSuffix(pkg, "/"+strings.Trim(c.Package, "./")) {
			return c.Name
		}
	}
	return path.Base(pkg)
}
