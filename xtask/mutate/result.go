package mutate

import (
	"bufio"
	"encoding/json"
	"io"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Status is what became of a mutant.
type Status string

const (
	Killed    Status = "killed"
	Survived  Status = "survived"
	NoCompile Status = "no-compile" // the rewrite does not build: not a real mutant
	Invalid   Status = "error"      // the run itself failed (build of images, Docker): says nothing
)

// How says what kind of failure killed a mutant.
type How string

const (
	ByAssertion    How = "assertion"    // a check of the behaviour failed
	ByPrecondition How = "precondition" // bring-up, WaitForHealthy or a setup step failed first
	ByTimeout      How = "timeout"      // the test (or the whole package) ran out of time
)

// Result is one mutant's run.
type Result struct {
	Mutant   Mutant
	Status   Status
	How      How      // for Killed
	KilledBy []string // "category/TestName" of each failed test
	Detail   string   // the first failure line, the compile error or the run error
	Ran      []string // categories whose suites ran
	Missing  []string // claimed categories with no package in the tree
	Counts   Counts
	Wall     time.Duration
}

// Counts are the top-level tests of the suites that ran.
type Counts struct{ Run, Passed, Failed, Skipped int }

func (c *Counts) add(o Counts) {
	c.Run += o.Run
	c.Passed += o.Passed
	c.Failed += o.Failed
	c.Skipped += o.Skipped
}

// testEvent is one line of `go test -json`.
type testEvent struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// PackageRun is what one `go test -json` run of a suite package said.
type PackageRun struct {
	Counts   Counts
	Failed   []string          // top-level tests that failed, in order
	Output   map[string]string // test (or "" for the package) → its output
	PkgFail  bool              // the package failed (also without a failed test: build error, TestMain, timeout panic)
	TimedOut bool              // "panic: test timed out" was printed
}

var timeoutPanic = "panic: test timed out after"

// ParseTestJSON reads a `go test -json` stream. Lines that are not JSON
// (the build's own messages) are kept as package output.
func ParseTestJSON(r io.Reader) (PackageRun, error) {
	pr := PackageRun{Output: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	outs := map[string]*strings.Builder{}
	out := func(k string) *strings.Builder {
		b, ok := outs[k]
		if !ok {
			b = &strings.Builder{}
			outs[k] = b
		}
		return b
	}
	for sc.Scan() {
		line := sc.Bytes()
		var ev testEvent
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &ev) != nil {
			out("").Write(line)
			out("").WriteByte('\n')
			continue
		}
		top := ev.Test
		if i := strings.IndexByte(top, '/'); i >= 0 {
			top = top[:i]
		}
		switch ev.Action {
		case "output":
			if strings.Contains(ev.Output, timeoutPanic) {
				pr.TimedOut = true
			}
			out(top).WriteString(ev.Output)
		case "pass", "fail", "skip":
			if ev.Test == "" {
				if ev.Action == "fail" {
					pr.PkgFail = true
				}
				continue
			}
			if top != ev.Test { // subtests count through their parent
				continue
			}
			pr.Counts.Run++
			switch ev.Action {
			case "pass":
				pr.Counts.Passed++
			case "fail":
				pr.Counts.Failed++
				pr.Failed = append(pr.Failed, ev.Test)
			case "skip":
				pr.Counts.Skipped++
			}
		}
	}
	for k, b := range outs {
		pr.Output[k] = b.String()
	}
	return pr, sc.Err()
}

// Infrastructure failures say nothing about the mutant: the images are
// missing, or there is no engine.
var infraRE = regexp.MustCompile("is missing: run `go run mage.go setup`|no Docker engine at |no free subnet after")

// Bring-up and readiness failures: the harness's Start ("start <topology>:",
// reported at the test's line)
// and waits ("wait for <svc>:", "<svc> exited with N").
var preconditionRE = regexp.MustCompile(`(_test\.go:\d+: start [a-z0-9-]+: |wait for [A-Za-z0-9_.-]+: |\b[a-z0-9-]+ exited with -?\d+|WaitForHealthy|waits for [a-z0-9-]+: )`)

// Classify says how a failed test's output killed the mutant. A timeout
// panic wins (the test did not finish); then a failure whose first error
// line is a harness bring-up or wait error is a precondition; anything
// else is an assertion.
func Classify(output string, timedOut bool) How {
	if timedOut || strings.Contains(output, timeoutPanic) {
		return ByTimeout
	}
	if first := FirstFailure(output); first != "" && preconditionRE.MatchString(first) {
		return ByPrecondition
	}
	return ByAssertion
}

// IsInfra reports whether output shows a failure of the environment rather
// than of the system under test.
func IsInfra(output string) bool { return infraRE.MatchString(output) }

var (
	testLineRE = regexp.MustCompile(`^\s+[A-Za-z0-9_]+_test\.go:\d+: `)
	anyLineRE  = regexp.MustCompile(`^\s+[A-Za-z0-9_]+\.go:\d+: `)
)

// FirstFailure returns the line of a failed test's output that most likely
// is its failure (trimmed, at most 240 characters). Errors and logs look
// alike in go test output; the harness logs from its own (non-test) files
// and its Must… helpers report at the test's line, and a test stops at its
// first fatal error, so this is the last line attributed to a _test.go file
// before "--- FAIL"; else a panic line; else the last "file.go:N:" line.
func FirstFailure(output string) string {
	var lastTest, lastAny, panicLine string
	for _, l := range strings.Split(output, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "--- FAIL") {
			break
		}
		switch {
		case testLineRE.MatchString(l):
			lastTest = l
		case anyLineRE.MatchString(l):
			lastAny = l
		case strings.HasPrefix(l, "panic: ") && panicLine == "":
			panicLine = l
		}
	}
	l := lastTest
	if l == "" {
		l = panicLine
	}
	if l == "" {
		l = lastAny
	}
	l = strings.TrimSpace(l)
	if len(l) > 240 {
		l = l[:240] + "…"
	}
	return l
}

// judge turns the package runs of a mutant (in the order they ran) into
// its status, how it was killed and by which tests.
func judge(res *Result, runs map[string]PackageRun, order []string) {
	res.Status = Survived
	for _, cat := range order {
		pr := runs[cat]
		res.Counts.add(pr.Counts)
		if !pr.PkgFail && len(pr.Failed) == 0 {
			continue
		}
		all := pr.Output[""]
		for _, o := range pr.Output {
			all += o
		}
		if len(pr.Failed) == 0 {
			// The package failed without a failed test: TestMain, a build
			// error of the suite, or a timeout panic outside a test.
			if IsInfra(all) || !pr.TimedOut {
				if res.Status == Survived {
					res.Status, res.Detail = Invalid, cat+": package failed without a failing test: "+lastLines(pr.Output[""], 3)
				}
				continue
			}
			res.Status, res.How = Killed, ByTimeout
			res.KilledBy = append(res.KilledBy, cat+"/(package)")
			res.Detail = cat + ": " + timeoutPanic
			continue
		}
		for _, t := range pr.Failed {
			if IsInfra(pr.Output[t]) {
				if res.Status == Survived {
					res.Status, res.Detail = Invalid, cat+"/"+t+": "+FirstFailure(pr.Output[t])
				}
				continue
			}
			how := Classify(pr.Output[t], pr.TimedOut && !strings.Contains(pr.Output[t], "--- FAIL"))
			if res.Status != Killed {
				res.Status, res.How, res.Detail = Killed, how, FirstFailure(pr.Output[t])
			} else if how == ByAssertion && res.How != ByAssertion {
				// An assertion anywhere is the better evidence.
				res.How, res.Detail = how, FirstFailure(pr.Output[t])
			}
			res.KilledBy = append(res.KilledBy, cat+"/"+t)
		}
	}
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, " | ")
}

// Summary is the kill rate over the mutants that count (killed or
// survived; a mutant that does not compile or whose run failed does not).
func Summary(rs []Result) (killed, counted int) {
	for _, r := range rs {
		switch r.Status {
		case Killed:
			killed++
			counted++
		case Survived:
			counted++
		}
	}
	return killed, counted
}

// Survivors returns the names of the surviving mutants, sorted.
func Survivors(rs []Result) []string {
	var out []string
	for _, r := range rs {
		if r.Status == Survived {
			out = append(out, r.Mutant.Name)
		}
	}
	sort.Strings(out)
	return out
}
