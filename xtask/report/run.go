package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"html/template"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// RunInput says what a run overview shows.
type RunInput struct {
	Title string
	// Files are the JUnit XML files (gotestsum) of the run shown.
	Files []string
	// History, when set, is the JUnit files of each run of a soak, in
	// order; the page then has a per-test flake history.
	History [][]string
	// Artifacts is the directory of the tests' artifacts, searched for
	// their report.html (see Write).
	Artifacts string
	// Category names a package's category ("" or nil: its last path element).
	Category func(pkg string) string
	// Out is where the page goes.
	Out string
}

// TestResult is one top-level test of a run.
type TestResult struct {
	Category, Package, Name string
	Result                  string // "passed", "failed", "skipped"
	Duration                time.Duration
	Message                 string // a failure's telling line
	Report                  string // link to its report.html, relative to the page
}

type categoryRow struct {
	Name                           string
	Tests, Passed, Failed, Skipped int
	Duration                       time.Duration
}

type flakeRow struct {
	Test  string
	Cells []string // per run: passed, failed, skipped or absent ("")
	Fails int
}

type junitDoc struct {
	Suites []struct {
		Name     string `xml:"name,attr"`
		Failures int    `xml:"failures,attr"`
		Errors   int    `xml:"errors,attr"`
		Time     string `xml:"time,attr"`
		Cases    []struct {
			Name    string     `xml:"name,attr"`
			Time    string     `xml:"time,attr"`
			Skipped *struct{}  `xml:"skipped"`
			Failure *junitBody `xml:"failure"`
			Error   *junitBody `xml:"error"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

type junitBody struct {
	Message string `xml:"message,attr"`
	Body    string `xml:",chardata"`
}

// ReadResults reads the top-level tests of gotestsum JUnit files (a
// subtest's failure is its test's). A package that failed without test
// cases (build error, panic, timeout) is one failed "(package)" test.
func ReadResults(files []string, category func(string) string) ([]TestResult, error) {
	var out []TestResult
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("run report: %w", err)
		}
		var doc junitDoc
		if err := xml.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("run report: %s: %w", f, err)
		}
		for _, s := range doc.Suites {
			cat := s.Name[strings.LastIndexByte(s.Name, '/')+1:]
			if category != nil {
				if c := category(s.Name); c != "" {
					cat = c
				}
			}
			idx := map[string]int{}
			for _, c := range s.Cases {
				top, _, sub := strings.Cut(c.Name, "/")
				i, seen := idx[top]
				if !seen {
					i = len(out)
					idx[top] = i
					out = append(out, TestResult{Category: cat, Package: s.Name, Name: top, Result: "passed"})
				}
				r := &out[i]
				if !sub {
					if secs, err := strconv.ParseFloat(c.Time, 64); err == nil {
						r.Duration = time.Duration(secs * float64(time.Second))
					}
					if c.Skipped != nil && r.Result == "passed" {
						r.Result = "skipped"
					}
				}
				if b := c.Failure; b != nil || c.Error != nil {
					if b == nil {
						b = c.Error
					}
					r.Result = "failed"
					if r.Message == "" {
						r.Message = telling(b)
					}
				}
			}
			if len(s.Cases) == 0 && s.Failures+s.Errors > 0 {
				out = append(out, TestResult{Category: cat, Package: s.Name, Name: "(package)", Result: "failed",
					Message: "the package failed without test results (build error, panic or timeout)"})
			}
		}
	}
	return out, nil
}

// telling picks a failure's line that says what went wrong: the last
// "_test.go:N:" line, else a panic line, else the first non-empty one.
func telling(b *junitBody) string {
	lines := strings.Split(b.Body, "\n")
	pick := ""
	for i := len(lines) - 1; i >= 0 && pick == ""; i-- {
		if l := strings.TrimSpace(lines[i]); strings.Contains(l, "_test.go:") {
			pick = l
		}
	}
	for _, l := range lines {
		if pick != "" {
			break
		}
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "panic:") {
			pick = l
		}
	}
	for _, l := range lines {
		if pick != "" {
			break
		}
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "=== ") && !strings.HasPrefix(l, "--- ") {
			pick = l
		}
	}
	if pick == "" {
		pick = strings.TrimSpace(b.Message)
	}
	return short(pick, 300)
}

// findReports maps test names to the report.html files under dir (one
// directory per test, named by the harness), read from each timeline.json.
func findReports(dir string) map[string]string {
	out := map[string]string{}
	if dir == "" {
		return out
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return out
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		sub := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(sub, HTMLName)); err != nil {
			continue
		}
		f, err := os.Open(filepath.Join(sub, JSONName))
		if err != nil {
			continue
		}
		var head struct {
			Test string `json:"test"`
		}
		err = json.NewDecoder(f).Decode(&head)
		f.Close()
		if err == nil && head.Test != "" {
			out[head.Test] = filepath.Join(sub, HTMLName)
		}
	}
	return out
}

type runPage struct {
	Title      string
	Generated  string
	Total      categoryRow
	Categories []categoryRow
	Tests      []TestResult
	Failures   []TestResult
	Bars       template.HTML
	Runs       int
	Flakes     []flakeRow
	Files      []string
}

// WriteRun writes the run overview to in.Out and returns its path.
func WriteRun(in RunInput) (string, error) {
	tests, err := ReadResults(in.Files, in.Category)
	if err != nil {
		return "", err
	}
	reports := findReports(in.Artifacts)
	base := filepath.Dir(in.Out)
	for i := range tests {
		if p, ok := reports[tests[i].Name]; ok {
			if rel, err := filepath.Rel(base, p); err == nil {
				tests[i].Report = filepath.ToSlash(rel)
			}
		}
	}
	p := runPage{Title: in.Title, Generated: time.Now().UTC().Format("2006-01-02 15:04:05 UTC"), Runs: len(in.History)}
	for _, f := range in.Files {
		p.Files = append(p.Files, filepath.Base(f))
	}
	rank := map[string]int{"failed": 0, "passed": 1, "skipped": 2}
	sort.SliceStable(tests, func(a, b int) bool {
		if rank[tests[a].Result] != rank[tests[b].Result] {
			return rank[tests[a].Result] < rank[tests[b].Result]
		}
		if tests[a].Category != tests[b].Category {
			return tests[a].Category < tests[b].Category
		}
		return tests[a].Duration > tests[b].Duration
	})
	p.Tests = tests
	cats := map[string]*categoryRow{}
	var order []string
	p.Total.Name = "total"
	for _, t := range tests {
		if t.Result == "failed" {
			p.Failures = append(p.Failures, t)
		}
		c := cats[t.Category]
		if c == nil {
			c = &categoryRow{Name: t.Category}
			cats[t.Category] = c
			order = append(order, t.Category)
		}
		for _, r := range []*categoryRow{c, &p.Total} {
			r.Tests++
			r.Duration += t.Duration
			switch t.Result {
			case "failed":
				r.Failed++
			case "skipped":
				r.Skipped++
			default:
				r.Passed++
			}
		}
	}
	sort.Slice(order, func(a, b int) bool {
		if (cats[order[a]].Failed > 0) != (cats[order[b]].Failed > 0) {
			return cats[order[a]].Failed > 0
		}
		return order[a] < order[b]
	})
	for _, n := range order {
		p.Categories = append(p.Categories, *cats[n])
	}
	p.Bars = durationBars(tests)
	if len(in.History) > 0 {
		if p.Flakes, err = flakes(in.History, in.Category); err != nil {
			return "", err
		}
	}
	var buf bytes.Buffer
	if err := runTmpl.Execute(&buf, p); err != nil {
		return "", fmt.Errorf("run report: %w", err)
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", fmt.Errorf("run report: %w", err)
	}
	if err := os.WriteFile(in.Out, buf.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("run report: %w", err)
	}
	return in.Out, nil
}

// flakes is each test's result per soak run, tests that failed at least
// once first.
func flakes(runs [][]string, category func(string) string) ([]flakeRow, error) {
	idx := map[string]*flakeRow{}
	for i, files := range runs {
		res, err := ReadResults(files, category)
		if err != nil {
			return nil, err
		}
		for _, t := range res {
			key := t.Category + "." + t.Name
			r := idx[key]
			if r == nil {
				r = &flakeRow{Test: key, Cells: make([]string, len(runs))}
				idx[key] = r
			}
			r.Cells[i] = t.Result
			if t.Result == "failed" {
				r.Fails++
			}
		}
	}
	out := make([]flakeRow, 0, len(idx))
	for _, r := range idx {
		out = append(out, *r)
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].Fails != out[b].Fails {
			return out[a].Fails > out[b].Fails
		}
		return out[a].Test < out[b].Test
	})
	return out, nil
}

// durationBars draws one horizontal bar per test, grouped by category,
// coloured by result, its length the test's duration.
func durationBars(tests []TestResult) template.HTML {
	const rowH, left, width = 15, 360, 1000
	sorted := append([]TestResult(nil), tests...)
	sort.SliceStable(sorted, func(a, b int) bool {
		if sorted[a].Category != sorted[b].Category {
			return sorted[a].Category < sorted[b].Category
		}
		return sorted[a].Duration > sorted[b].Duration
	})
	maxD := 0.0
	for _, t := range sorted {
		maxD = math.Max(maxD, t.Duration.Seconds())
	}
	if maxD <= 0 {
		maxD = 1
	}
	var b strings.Builder
	rows := 0
	cat := ""
	var body strings.Builder
	for _, t := range sorted {
		if t.Category != cat {
			cat = t.Category
			fmt.Fprintf(&body, `<text class="bar-cat" x="4" y="%d">%s</text>`, rows*rowH+rowH-3, esc(cat))
			rows++
		}
		y := rows * rowH
		w := math.Max(t.Duration.Seconds()/maxD*(width-left-70), 1)
		fmt.Fprintf(&body, `<g class="bar %s" data-test="%s"><text x="16" y="%d">%s</text><rect x="%d" y="%d" width="%.1f" height="%d"/><text class="bar-d" x="%.1f" y="%d">%.1fs</text><title>%s: %s in %.2fs</title></g>`,
			t.Result, esc(t.Name), y+rowH-3, esc(short(t.Name, 52)), left, y+2, w, rowH-4, float64(left)+w+4, y+rowH-3, t.Duration.Seconds(), esc(t.Name), t.Result, t.Duration.Seconds())
		rows++
	}
	fmt.Fprintf(&b, `<svg id="durations" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d">%s</svg>`, width, rows*rowH+4, body.String())
	return template.HTML(b.String())
}

var runTmpl = template.Must(template.New("run").Funcs(template.FuncMap{
	"secs": func(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title><style>` + runCSS + `</style></head><body>
<h1>{{.Title}} <span class="result {{if .Total.Failed}}failed{{else}}passed{{end}}">{{.Total.Passed}} passed, {{.Total.Failed}} failed, {{.Total.Skipped}} skipped</span></h1>
<p class="meta">generated {{.Generated}} · {{secs .Total.Duration}} of test time · from {{range $i, $f := .Files}}{{if $i}}, {{end}}{{$f}}{{end}}</p>
{{if .Failures}}<section id="failures"><h2>Failures first</h2><table><tr><th>category</th><th>test</th><th>duration</th><th>report</th><th>message</th></tr>
{{range .Failures}}<tr class="failed"><td>{{.Category}}</td><td>{{.Name}}</td><td>{{secs .Duration}}</td><td>{{if .Report}}<a class="report-link" href="{{.Report}}">report.html</a>{{else}}—{{end}}</td><td class="msg">{{.Message}}</td></tr>
{{end}}</table></section>{{end}}
<section id="categories"><h2>Per category</h2><table><tr><th>category</th><th>tests</th><th>passed</th><th>failed</th><th>skipped</th><th>duration</th></tr>
{{range .Categories}}<tr class="{{if .Failed}}failed{{end}}"><td>{{.Name}}</td><td>{{.Tests}}</td><td>{{.Passed}}</td><td>{{.Failed}}</td><td>{{.Skipped}}</td><td>{{secs .Duration}}</td></tr>
{{end}}<tr class="total"><td>total</td><td>{{.Total.Tests}}</td><td>{{.Total.Passed}}</td><td>{{.Total.Failed}}</td><td>{{.Total.Skipped}}</td><td>{{secs .Total.Duration}}</td></tr></table></section>
{{if .Flakes}}<section id="flakes"><h2>Flake history over {{.Runs}} soak runs</h2><table><tr><th>test</th><th>failed</th><th>runs</th></tr>
{{range .Flakes}}<tr><td>{{.Test}}</td><td>{{.Fails}}</td><td class="cells">{{range .Cells}}<span class="cell {{.}}" title="{{if .}}{{.}}{{else}}not run{{end}}"></span>{{end}}</td></tr>
{{end}}</table></section>{{end}}
<section><h2>Durations</h2><div class="legend"><span class="k passed"></span>passed <span class="k failed"></span>failed <span class="k skipped"></span>skipped</div>{{.Bars}}</section>
<section id="tests"><h2>Every test</h2><table><tr><th>category</th><th>test</th><th>result</th><th>duration</th><th>report</th></tr>
{{range .Tests}}<tr class="{{.Result}}"><td>{{.Category}}</td><td>{{.Name}}</td><td>{{.Result}}</td><td>{{secs .Duration}}</td><td>{{if .Report}}<a href="{{.Report}}">report.html</a>{{end}}</td></tr>
{{end}}</table></section>
</body></html>
`))

const runCSS = `
body{font:13px/1.4 system-ui,sans-serif;margin:0 16px 24px;color:#1f2937}
h1{font-size:18px}h2{font-size:14px;margin:16px 0 4px}.meta{color:#6b7280}
.result{padding:1px 8px;border-radius:4px;color:#fff;font-size:14px}.result.failed{background:#dc2626}.result.passed{background:#16a34a}
table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
tr.failed td{background:#fef2f2}tr.skipped td{color:#6b7280}tr.total td{font-weight:600}
td.msg{font-family:ui-monospace,monospace;font-size:11px;max-width:700px}
svg text{font-size:11px;fill:#374151}.bar-cat{font-weight:700}.bar-d{fill:#6b7280}
.bar.passed rect{fill:#4ade80}.bar.failed rect{fill:#ef4444}.bar.skipped rect{fill:#d1d5db}
.cell{display:inline-block;width:12px;height:12px;margin-right:2px;background:#f3f4f6;border:1px solid #e5e7eb}
.cell.passed{background:#4ade80}.cell.failed{background:#ef4444}.cell.skipped{background:#d1d5db}
.legend .k{display:inline-block;width:12px;height:10px;margin:0 3px 0 10px}.k.passed{background:#4ade80}.k.failed{background:#ef4444}.k.skipped{background:#d1d5db}
`

// ArtifactsEnv overrides where the tests' artifacts go.
const ArtifactsEnv = "RBEE_TEST_ARTIFACTS"

// ArtifactsRoot is the directory of every test's artifacts directory:
// $RBEE_TEST_ARTIFACTS, by default <repo>/artifacts.
func ArtifactsRoot(repoDir string) string {
	if base := os.Getenv(ArtifactsEnv); base != "" {
		return base
	}
	return filepath.Join(repoDir, "artifacts")
}
