package testrun

import (
	"encoding/xml"
	"fmt"
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// DurationsEnv names the directory of JUnit XML whose recorded durations
// balance the shards; unset, the JUnit directory of the run (test-results/).
// CI points it at the previous run's results so that every shard job plans
// from the same input.
const DurationsEnv = "RBEE_SHARD_DURATIONS"

// TestID is one top-level test of a category.
type TestID struct{ Category, Name string }

func (t TestID) String() string { return t.Category + "." + t.Name }

// ListTests returns the top-level tests (func TestXxx(*testing.T)) that `go
// test -tags docker` runs in each category's package, sorted by category
// order and name. It reads the source; nothing is compiled.
func ListTests(root string, cats []Category) ([]TestID, error) {
	ctx := build.Default
	ctx.BuildTags = append(append([]string(nil), ctx.BuildTags...), "docker")
	var out []TestID
	for _, c := range cats {
		dir := filepath.Join(root, filepath.FromSlash(strings.Trim(c.Package, "/")))
		pkg, err := ctx.ImportDir(dir, 0)
		if err != nil {
			return nil, fmt.Errorf("list tests of %s: %w", c.Name, err)
		}
		var names []string
		for _, f := range append(append([]string(nil), pkg.TestGoFiles...), pkg.XTestGoFiles...) {
			file, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, f), nil, parser.SkipObjectResolution)
			if err != nil {
				return nil, fmt.Errorf("list tests of %s: %w", c.Name, err)
			}
			for _, d := range file.Decls {
				if fn, ok := d.(*ast.FuncDecl); ok && isTestFunc(fn) {
					names = append(names, fn.Name.Name)
				}
			}
		}
		sort.Strings(names)
		for _, n := range names {
			out = append(out, TestID{c.Name, n})
		}
	}
	return out, nil
}

// isTestFunc is go test's rule: func TestXxx(t *testing.T), Xxx not
// starting with a lower-case letter, no receiver.
func isTestFunc(fn *ast.FuncDecl) bool {
	rest, ok := strings.CutPrefix(fn.Name.Name, "Test")
	if !ok || fn.Recv != nil || fn.Type.Params == nil || len(fn.Type.Params.List) != 1 || len(fn.Type.Params.List[0].Names) > 1 {
		return false
	}
	if r, _ := utf8.DecodeRuneInString(rest); rest != "" && unicode.IsLower(r) {
		return false
	}
	star, ok := fn.Type.Params.List[0].Type.(*ast.StarExpr)
	if !ok {
		return false
	}
	sel, ok := star.X.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	return ok && pkg.Name == "testing" && sel.Sel.Name == "T"
}

type shardJUnit struct {
	Suites []struct {
		Name      string `xml:"name,attr"`
		Timestamp string `xml:"timestamp,attr"`
		Cases     []struct {
			Name    string    `xml:"name,attr"`
			Time    string    `xml:"time,attr"`
			Skipped *struct{} `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// ReadDurations reads every JUnit file in dir and returns each top-level
// test's duration from the newest result that ran it (by the suite's
// timestamp, else the file's modification time). Skipped runs are left
// out: they say nothing about how long the test takes. A missing dir is
// no durations, not an error.
func ReadDurations(dir string) (map[TestID]time.Duration, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.xml"))
	if err != nil {
		return nil, err
	}
	type seen struct {
		d  time.Duration
		at time.Time
	}
	best := map[TestID]seen{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var j shardJUnit
		if err := xml.Unmarshal(data, &j); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		fi, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		for _, s := range j.Suites {
			cat, ok := knownCategory(s.Name)
			if !ok {
				continue
			}
			at, err := time.Parse(time.RFC3339, s.Timestamp)
			if err != nil {
				at = fi.ModTime()
			}
			for _, c := range s.Cases {
				secs, err := strconv.ParseFloat(c.Time, 64)
				if c.Skipped != nil || strings.Contains(c.Name, "/") || err != nil || secs < 0 {
					continue
				}
				id := TestID{cat, c.Name}
				if prev, ok := best[id]; !ok || at.After(prev.at) {
					best[id] = seen{time.Duration(secs * float64(time.Second)), at}
				}
			}
		}
	}
	out := make(map[TestID]time.Duration, len(best))
	for id, s := range best {
		out[id] = s.d
	}
	return out, nil
}

// knownCategory maps a JUnit suite name (an import path) to its category.
func knownCategory(pkg string) (string, bool) {
	for _, c := range Categories {
		if strings.HasSuffix(pkg, "/"+strings.Trim(c.Package, "./")) {
			return c.Name, true
		}
	}
	return "", false
}

// Shard is one part of a Plan.
type Shard struct {
	Tests    []TestID      // in category order, then by name
	Estimate time.Duration // the sum of its tests' weights
}

// Plan is the Docker tests split into shards.
type Plan struct {
	Shards []Shard
	// Measured is how many of the tests had a recorded duration. With
	// none, every test weighs the same (balanced by count); a test with
	// none among measured ones weighs their mean.
	Measured int
}

// MakePlan splits tests into n shards of about equal expected duration:
// heaviest first, each onto the lightest shard so far (lowest index on a
// tie). Tests of the same name in several categories stay together, so a
// shard runs as one `go test -run '^(names)$'` over its packages without
// running another shard's test of that name. The result depends only on
// the set of tests, the durations and n: every test lands in exactly one
// shard.
func MakePlan(tests []TestID, durations map[TestID]time.Duration, n int) (Plan, error) {
	if n < 1 {
		return Plan{}, fmt.Errorf("shard count %d: want at least 1", n)
	}
	var known time.Duration
	p := Plan{Shards: make([]Shard, n)}
	uniq := map[TestID]bool{}
	for _, t := range tests {
		if uniq[t] {
			continue
		}
		uniq[t] = true
		if d, ok := durations[t]; ok {
			known += d
			p.Measured++
		}
	}
	weight := func(t TestID) time.Duration {
		if p.Measured == 0 {
			return time.Second // count: every test the same
		}
		if d, ok := durations[t]; ok {
			return d
		}
		return known / time.Duration(p.Measured)
	}
	type group struct {
		name  string
		w     time.Duration
		tests []TestID
	}
	byName := map[string]*group{}
	for t := range uniq {
		g := byName[t.Name]
		if g == nil {
			g = &group{name: t.Name}
			byName[t.Name] = g
		}
		g.w += weight(t)
		g.tests = append(g.tests, t)
	}
	groups := make([]*group, 0, len(byName))
	for _, g := range byName {
		groups = append(groups, g)
	}
	sort.Slice(groups, func(i, j int) bool {
		if groups[i].w != groups[j].w {
			return groups[i].w > groups[j].w
		}
		return groups[i].name < groups[j].name
	})
	for _, g := range groups {
		k := 0
		for i := range p.Shards {
			if p.Shards[i].Estimate < p.Shards[k].Estimate {
				k = i
			}
		}
		p.Shards[k].Tests = append(p.Shards[k].Tests, g.tests...)
		p.Shards[k].Estimate += g.w
	}
	rank := func(cat string) int {
		for i, c := range Categories {
			if c.Name == cat {
				return i
			}
		}
		return len(Categories)
	}
	for i := range p.Shards {
		ts := p.Shards[i].Tests
		sort.Slice(ts, func(a, b int) bool {
			if ra, rb := rank(ts[a].Category), rank(ts[b].Category); ra != rb {
				return ra < rb
			}
			if ts[a].Category != ts[b].Category {
				return ts[a].Category < ts[b].Category
			}
			return ts[a].Name < ts[b].Name
		})
	}
	return p, nil
}

// ParseShard reads "I/N" (1 ≤ I ≤ N).
func ParseShard(s string) (i, n int, err error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || i < 1 || i > n {
		return 0, 0, fmt.Errorf("shard %q: want I/N with 1 ≤ I ≤ N, such as 1/3", s)
	}
	return i, n, nil
}

// RunPattern is the go test -run pattern that selects exactly these tests'
// names.
func (s Shard) RunPattern() string {
	var names []string
	seen := map[string]bool{}
	for _, t := range s.Tests {
		if !seen[t.Name] {
			seen[t.Name] = true
			names = append(names, regexp.QuoteMeta(t.Name))
		}
	}
	sort.Strings(names)
	return "^(" + strings.Join(names, "|") + ")$"
}

// Spec is the go test run of shard i (1-based) of n: the packages of its
// tests and a -run pattern of their names. ok is false for a shard
// without tests (more shards than tests).
func (s Shard) Spec(i, n int) (spec Spec, ok bool) {
	if len(s.Tests) == 0 {
		return Spec{}, false
	}
	spec = Spec{Name: fmt.Sprintf("docker-shard-%d-of-%d", i, n), Docker: true, Run: s.RunPattern()}
	for _, c := range Categories {
		for _, t := range s.Tests {
			if t.Category == c.Name {
				spec.Packages = append(spec.Packages, c.Package)
				break
			}
		}
	}
	return spec, true
}

// Print writes the plan: per shard its estimate and its tests; with only > 0
// just shard only (1-based).
func (p Plan) Print(w io.Writer, only int) {
	basis := fmt.Sprintf("balanced by recorded durations (%d of %d tests measured)", p.Measured, p.count())
	if p.Measured == 0 {
		basis = "no recorded durations: balanced by test count"
	}
	fmt.Fprintf(w, "%d tests in %d shards, %s\n", p.count(), len(p.Shards), basis)
	for i, s := range p.Shards {
		if only > 0 && i+1 != only {
			continue
		}
		est := ""
		if p.Measured > 0 {
			est = ", est. " + s.Estimate.Round(100*time.Millisecond).String()
		}
		fmt.Fprintf(w, "shard %d/%d: %d tests%s\n", i+1, len(p.Shards), len(s.Tests), est)
		for _, t := range s.Tests {
			fmt.Fprintf(w, "  %s\n", t)
		}
	}
}

func (p Plan) count() int {
	n := 0
	for _, s := range p.Shards {
		n += len(s.Tests)
	}
	return n
}

// DurationsDir is where PlanDocker reads recorded durations:
// $RBEE_SHARD_DURATIONS, else the JUnit directory.
func (o Options) DurationsDir() string {
	o.fill()
	if d := os.Getenv(DurationsEnv); d != "" {
		return d
	}
	return o.JUnitDir
}

// PlanDocker splits the Docker tests of every category into n shards by the
// durations in o.DurationsDir().
func PlanDocker(o Options, n int) (Plan, error) {
	tests, err := ListTests(o.Root, Categories)
	if err != nil {
		return Plan{}, err
	}
	d, err := ReadDurations(o.DurationsDir())
	if err != nil {
		return Plan{}, fmt.Errorf("recorded durations: %w", err)
	}
	return MakePlan(tests, d, n)
}
