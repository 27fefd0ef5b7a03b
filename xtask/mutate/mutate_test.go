package mutate

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/xtask/setup"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found at %s: %v", root, err)
	}
	return root
}

// Every mutant must apply to the current tree: its snippet occurs exactly
// once in its file. When this fails, the code changed under the mutant;
// update its snippet in catalogue.go.
func TestCatalogueApplies(t *testing.T) {
	for _, err := range Check(repoRoot(t), Catalogue) {
		t.Error(err)
	}
}

func TestCatalogueCoversEveryCategory(t *testing.T) {
	if len(Catalogue) < 25 {
		t.Errorf("catalogue has %d mutants, want at least 25", len(Catalogue))
	}
	claimed := map[string]int{}
	for _, m := range Catalogue {
		for _, c := range m.Claims {
			claimed[c]++
		}
		if m.Catch == "" {
			t.Errorf("mutant %s: no Catch (the assertion that kills it)", m.Name)
		}
	}
	for _, c := range Categories {
		if claimed[c] == 0 {
			t.Errorf("no mutant is claimed by category %s", c)
		}
	}
}

func TestRewriteNeedsExactlyOneOccurrence(t *testing.T) {
	m := Mutant{Name: "m1", File: "internal/x/x.go", Old: "a > b", New: "a >= b"}
	got, err := m.Rewrite("if a > b {\n}")
	if err != nil || got != "if a >= b {\n}" {
		t.Fatalf("Rewrite = %q, %v; want the one occurrence replaced", got, err)
	}
	for _, src := range []string{"if a < b {}", "a > b; a > b"} {
		_, err := m.Rewrite(src)
		if err == nil {
			t.Fatalf("Rewrite(%q): no error; want one", src)
		}
		for _, want := range []string{"mutant m1", "internal/x/x.go"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %q", err, want)
			}
		}
	}
	if _, err := m.Rewrite("a > b; a > b"); !strings.Contains(err.Error(), "2 times") {
		t.Errorf("error %q does not say how often the snippet occurs", err)
	}
}

func TestApplyRewritesOnlyTheCopy(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "internal", "x", "x.go")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("package x\n\nconst n = 1\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	m := Mutant{Name: "m", Desc: "d", File: "internal/x/x.go", Old: "n = 1", New: "n = 2", Claims: []string{"e2e"}}
	if errs := Check(dir, []Mutant{m}); len(errs) > 0 {
		t.Fatal(errs)
	}
	if err := m.Apply(dir); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if string(b) != "package x\n\nconst n = 2\n" {
		t.Fatalf("after Apply: %q", b)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640 kept", st.Mode().Perm())
	}
	// Applied twice, the snippet is gone: the error names it.
	if err := m.Apply(dir); err == nil || !strings.Contains(err.Error(), "no longer occurs") {
		t.Errorf("second Apply: %v; want 'no longer occurs'", err)
	}
}

func TestValidate(t *testing.T) {
	ok := Mutant{Name: "ok-1", Desc: "d", File: "internal/a/a.go", Old: "x", New: "y", Claims: []string{"heartbeat"}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid mutant: %v", err)
	}
	cases := map[string]func(*Mutant){
		"name must be":     func(m *Mutant) { m.Name = "Bad Name" },
		"one non-empty":    func(m *Mutant) { m.Desc = "" },
		"not under cmd/":   func(m *Mutant) { m.File = "xtask/a.go" },
		"is a test":        func(m *Mutant) { m.File = "internal/a/a_test.go" },
		"changes nothing":  func(m *Mutant) { m.New = m.Old },
		"no category":      func(m *Mutant) { m.Claims = nil },
		"unknown category": func(m *Mutant) { m.Claims = []string{"smoke"} },
	}
	for want, mut := range cases {
		m := ok
		mut(&m)
		if err := m.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: Validate = %v; want an error containing %q", want, err, want)
		}
	}
	dup := Check(t.TempDir(), []Mutant{ok, ok})
	found := false
	for _, err := range dup {
		found = found || strings.Contains(err.Error(), "name used twice")
	}
	if !found {
		t.Errorf("Check of a duplicated name: %v; want 'name used twice'", dup)
	}
}

func TestSelect(t *testing.T) {
	cat := []Mutant{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "a b c"},
		{[]string{"all"}, "a b c"},
		{[]string{"c,a"}, "a c"},
		{[]string{"b", "c"}, "b c"},
		{[]string{"c a"}, "a c"},
	} {
		got, err := Select(cat, tc.args...)
		if err != nil {
			t.Fatalf("Select(%q): %v", tc.args, err)
		}
		var names []string
		for _, m := range got {
			names = append(names, m.Name)
		}
		if strings.Join(names, " ") != tc.want {
			t.Errorf("Select(%q) = %v, want %s", tc.args, names, tc.want)
		}
	}
	if _, err := Select(cat, "a,zz"); err == nil || !strings.Contains(err.Error(), "zz") || !strings.Contains(err.Error(), "a, b, c") {
		t.Errorf("Select of an unknown name: %v; want an error naming it and the known ones", err)
	}
}

// jsonRun builds a `go test -json` stream from (action, test, output) triples.
func jsonRun(lines ...[3]string) string {
	var b strings.Builder
	for _, l := range lines {
		out := ""
		if l[2] != "" {
			out = `,"Output":` + quote(l[2])
		}
		test := ""
		if l[1] != "" {
			test = `,"Test":"` + l[1] + `"`
		}
		b.WriteString(`{"Action":"` + l[0] + `","Package":"p"` + test + out + "}\n")
	}
	return b.String()
}

func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

func parse(t *testing.T, s string) PackageRun {
	t.Helper()
	pr, err := ParseTestJSON(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return pr
}

func TestJudge(t *testing.T) {
	pass := jsonRun(
		[3]string{"run", "TestA", ""}, [3]string{"pass", "TestA", ""},
		[3]string{"run", "TestB", ""}, [3]string{"output", "TestB", "--- SKIP: TestB\n"}, [3]string{"skip", "TestB", ""},
		[3]string{"pass", "", ""})
	assertion := jsonRun(
		[3]string{"run", "TestA", ""},
		[3]string{"output", "TestA", "    a_test.go:40: hive-1 still online after 9s; want offline\n"},
		[3]string{"run", "TestA/sub", ""}, [3]string{"fail", "TestA/sub", ""},
		[3]string{"fail", "TestA", ""}, [3]string{"fail", "", ""})
	precondition := jsonRun(
		[3]string{"run", "TestX", ""},
		[3]string{"output", "TestX", "    harness.go:12: creating network\n    lifecycle_test.go:33: start localhost: queen waits for hive-localhost: wait for hive-localhost: unhealthy\n"},
		[3]string{"fail", "TestX", ""}, [3]string{"fail", "", ""})
	timeout := jsonRun(
		[3]string{"run", "TestSlow", ""},
		[3]string{"output", "TestSlow", "panic: test timed out after 20m0s\n\trunning tests:\n\t\tTestSlow (20m0s)\n"},
		[3]string{"fail", "TestSlow", ""}, [3]string{"fail", "", ""})
	infra := jsonRun(
		[3]string{"run", "TestX", ""},
		[3]string{"output", "TestX", "    testing.go:33: start localhost: image rbee-test/queen:mut-a (service queen) is missing: run `go run mage.go setup`: no such image\n"},
		[3]string{"fail", "TestX", ""}, [3]string{"fail", "", ""})
	buildFail := "# suite\n./x_test.go:3:2: undefined: foo\n" + jsonRun([3]string{"fail", "", ""})

	for _, tc := range []struct {
		name     string
		runs     map[string]string
		status   Status
		how      How
		killedBy string
		counts   Counts
	}{
		{"survived", map[string]string{"heartbeat": pass}, Survived, "", "", Counts{2, 1, 0, 1}},
		{"assertion", map[string]string{"heartbeat": pass, "failure": assertion}, Killed, ByAssertion, "failure/TestA", Counts{3, 1, 1, 1}},
		{"precondition", map[string]string{"lifecycle": precondition}, Killed, ByPrecondition, "lifecycle/TestX", Counts{1, 0, 1, 0}},
		{"timeout", map[string]string{"e2e": timeout}, Killed, ByTimeout, "e2e/TestSlow", Counts{1, 0, 1, 0}},
		{"infra", map[string]string{"e2e": infra}, Invalid, "", "", Counts{1, 0, 1, 0}},
		{"suite does not build", map[string]string{"e2e": buildFail}, Invalid, "", "", Counts{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runs := map[string]PackageRun{}
			var order []string
			for _, cat := range []string{"heartbeat", "failure", "lifecycle", "e2e"} {
				if s, ok := tc.runs[cat]; ok {
					runs[cat] = parse(t, s)
					order = append(order, cat)
				}
			}
			res := Result{}
			judge(&res, runs, order)
			if res.Status != tc.status || res.How != tc.how || strings.Join(res.KilledBy, ",") != tc.killedBy || res.Counts != tc.counts {
				t.Errorf("judge = %s/%s by %q counts %+v (detail %q); want %s/%s by %q counts %+v",
					res.Status, res.How, strings.Join(res.KilledBy, ","), res.Counts, res.Detail, tc.status, tc.how, tc.killedBy, tc.counts)
			}
		})
	}
}

func TestFirstFailureAndClassify(t *testing.T) {
	out := "=== RUN   TestA\n    harness.go:10: up in 3s\n    a_test.go:5: started\n    a_test.go:9: got 3, want 4\n" +
		"    harness.go:80: removing stack\n--- FAIL: TestA (9.00s)\n    b_test.go:1: later\n"
	if got := FirstFailure(out); got != "a_test.go:9: got 3, want 4" {
		t.Errorf("FirstFailure = %q, want the last test-file line before --- FAIL", got)
	}
	if got := FirstFailure("    harness.go:10: up\npanic: boom\n"); got != "panic: boom" {
		t.Errorf("FirstFailure of a panic = %q", got)
	}
	if got := FirstFailure("=== RUN TestA\n--- PASS: TestA\n"); got != "" {
		t.Errorf("FirstFailure of a passing output = %q, want empty", got)
	}
	if Classify("    x_test.go:9: got 3 events, want 4\n", false) != ByAssertion {
		t.Error("a plain check failure is not an assertion")
	}
	if Classify("    x_test.go:221: wait for queen: not healthy within 30s\n", false) != ByPrecondition {
		t.Error("a wait failure is not a precondition")
	}
	if Classify("    x_test.go:9: got 3 events\n", true) != ByTimeout {
		t.Error("timedOut does not win")
	}
}

func TestReport(t *testing.T) {
	a := Mutant{Name: "m-killed", Desc: "kills | pipes", File: "internal/a/a.go", Claims: []string{"httpcomm"}, Catch: "c1"}
	s := Mutant{Name: "m-survived", Desc: "survives", File: "internal/b/b.go", Claims: []string{"heartbeat", "security"}, Catch: "TestStaleness bound from below"}
	n := Mutant{Name: "m-broken", Desc: "no compile", File: "internal/c/c.go", Claims: []string{"e2e"}}
	rs := []Result{
		{Mutant: a, Status: Killed, How: ByPrecondition, KilledBy: []string{"httpcomm/TestSSEStreaming"}, Detail: "x_test.go:1: `boom`", Ran: []string{"httpcomm"}, Counts: Counts{3, 2, 1, 0}, Wall: 65 * time.Second},
		{Mutant: s, Status: Survived, Ran: []string{"heartbeat"}, Missing: []string{"security"}, Counts: Counts{5, 5, 0, 0}, Wall: 3 * time.Minute},
		{Mutant: n, Status: NoCompile, Detail: "a.go:3: undefined: x"},
	}
	got := Report(RunInfo{Date: time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC), Commit: "abc123", LoadStart: "3.1 2.0 1.0", CPUs: 2, Wall: time.Hour, Command: "go run mage.go mutate all"}, rs)
	for _, want := range []string{
		"- date: 2026-12-02 05:00 UTC",
		"- commit: abc123\n",
		"kill rate: **1 of 2 (50%)**; 1 not counted",
		"| `m-killed` | internal/a/a.go | httpcomm | killed | precondition | httpcomm/TestSSEStreaming | 3/2/1/0 | 1m5s |",
		"| `m-survived` | internal/b/b.go | heartbeat, security (no suite yet: security) | **survived** | — | — | 5/5/0/0 | 3m0s |",
		"| `m-broken` | internal/c/c.go | e2e | no-compile |",
		"- `m-killed` — kills | pipes. first failure: `x_test.go:1: 'boom'`",
		"## Survivors\n\n- `m-survived` (heartbeat): TestStaleness bound from below\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q\n---\n%s", want, got)
		}
	}
	partial := Report(RunInfo{Partial: true}, append(rs, Result{Mutant: Mutant{Name: "m-later", File: "internal/d/d.go", Claims: []string{"e2e"}}}))
	for _, want := range []string{"- mutants run: 3 of 4 (partial", "| `m-later` | internal/d/d.go | e2e | not run |", "kill rate: **1 of 2 (50%)**"} {
		if !strings.Contains(partial, want) {
			t.Errorf("partial report lacks %q", want)
		}
	}
	if strings.Contains(Report(RunInfo{}, rs[:1]), "m-survived") || !strings.Contains(Report(RunInfo{}, rs[:1]), "## Survivors\n\nNone.") {
		t.Error("a run without survivors does not say None")
	}
}

func TestCopyTrackedCopiesOnlyTrackedFiles(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	src, dst := t.TempDir(), t.TempDir()
	write := func(rel, s string) {
		p := filepath.Join(src, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("internal/a/a.go", "package a\n")
	write("gone.txt", "x")
	git := func(args ...string) {
		c := exec.Command("git", args...)
		c.Dir = src
		c.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		if b, err := c.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, b)
		}
	}
	git("init", "-q")
	git("add", ".")
	git("commit", "-qm", "x")
	write("internal/a/a.go", "package a // edited\n") // uncommitted edits are copied
	write("untracked.go", "package main\n")
	if err := os.Remove(filepath.Join(src, "gone.txt")); err != nil {
		t.Fatal(err)
	}
	if err := CopyTracked(t.Context(), src, dst); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "internal/a/a.go")); err != nil || string(b) != "package a // edited\n" {
		t.Errorf("tracked file: %q, %v", b, err)
	}
	for _, rel := range []string{"untracked.go", "gone.txt"} {
		if _, err := os.Stat(filepath.Join(dst, rel)); err == nil {
			t.Errorf("%s was copied", rel)
		}
	}
}

func TestSharedFailuresFlagsOneFailureOfUnrelatedMutants(t *testing.T) {
	r := func(name, file, detail string) Result {
		return Result{Mutant: Mutant{Name: name, File: file}, Status: Killed, How: ByAssertion, Detail: detail}
	}
	rs := []Result{
		r("a", "internal/sshx/sshx.go", "x_test.go:126: job-0e76bad5-b6a9-4f51-aee8-b616f7c80dd2 command timed out after 30s"),
		r("b", "internal/queen/ops.go", "x_test.go:126: job-11111111-b6a9-4f51-aee8-b616f7c80dd2 command timed out after 31s"),
		r("c", "internal/sshx/sshx.go", "x_test.go:9: got 3, want 4"),
		r("d", "internal/sshx/sshx.go", "x_test.go:9: got 3, wanted 5"),
	}
	got := SharedFailures(rs)
	if !got["a"] || !got["b"] || got["c"] || got["d"] || len(got) != 2 {
		t.Errorf("SharedFailures = %v; want a and b", got)
	}
	if rep := Report(RunInfo{}, rs); !strings.Contains(rep, "| killed | assertion † |") || !strings.Contains(rep, "† The same failure") {
		t.Errorf("report does not mark the shared failure:\n%s", rep)
	}
}

func TestTagKeepsCheckoutsApart(t *testing.T) {
	m := Mutant{Name: "queen-stop-not-offline"}
	for _, tc := range []struct{ own, want string }{
		{"", "mut-queen-stop-not-offline"},
		{"latest", "mut-queen-stop-not-offline"},
		{"alice", "alice-mut-queen-stop-not-offline"},
		{"-bad", "mut-queen-stop-not-offline"}, // not a tag: ignored, as setup ignores it
	} {
		t.Setenv("RBEE_IMAGE_TAG", tc.own)
		if got := m.Tag(); got != tc.want {
			t.Errorf("RBEE_IMAGE_TAG=%q: tag %q; want %q", tc.own, got, tc.want)
		}
	}
	t.Setenv("RBEE_IMAGE_TAG", strings.Repeat("x", 128))
	got := m.Tag()
	if len(got) != 128 || !strings.HasSuffix(got, "-mut-queen-stop-not-offline") || setup.CheckImageTag(got) != nil {
		t.Errorf("long RBEE_IMAGE_TAG: tag %q (%d chars); want 128 chars ending in the mutant's name", got, len(got))
	}
}
