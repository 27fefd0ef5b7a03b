package testrun

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// Property: for random test sets (names repeated across categories),
// random durations (some tests unmeasured, or none measured) and shard
// counts, every test is in exactly one shard, the plan does not depend on
// the input's order, each shard's -run pattern selects exactly its names,
// and no shard exceeds the even share by more than the heaviest name group
// (the bound of greedy list scheduling).
func TestMakePlanProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 29))
	cats := []string{"httpcomm", "sshcomm", "heartbeat", "failure", "e2e", "harness"}
	for iter := 0; iter < 300; iter++ {
		var tests []TestID
		durations := map[TestID]time.Duration{}
		measure := r.IntN(3) // 0: none measured, 1: some, 2: all
		for k, m := 0, r.IntN(60); k < m; k++ {
			id := TestID{cats[r.IntN(len(cats))], fmt.Sprintf("TestN%d", r.IntN(40))}
			tests = append(tests, id)
			if measure == 2 || (measure == 1 && r.IntN(2) == 0) {
				durations[id] = time.Duration(r.IntN(120_000)) * time.Millisecond
			}
		}
		n := 1 + r.IntN(8)
		p, err := MakePlan(tests, durations, n)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Shards) != n {
			t.Fatalf("iter %d: %d shards, want %d", iter, len(p.Shards), n)
		}
		// Exactly once.
		where := map[TestID]int{}
		for i, s := range p.Shards {
			for _, id := range s.Tests {
				if prev, dup := where[id]; dup {
					t.Fatalf("iter %d: %v in shards %d and %d", iter, id, prev, i)
				}
				where[id] = i
			}
		}
		for _, id := range tests {
			if _, ok := where[id]; !ok {
				t.Fatalf("iter %d: %v in no shard", iter, id)
			}
		}
		if len(where) != len(uniqueIDs(tests)) {
			t.Fatalf("iter %d: %d placed, %d tests", iter, len(where), len(uniqueIDs(tests)))
		}
		// Order of the input does not matter.
		shuffled := slices.Clone(tests)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if q, _ := MakePlan(shuffled, durations, n); !reflect.DeepEqual(p, q) {
			t.Fatalf("iter %d: plan depends on input order:\n%+v\n%+v", iter, p, q)
		}
		// Patterns select exactly the shard's names; a name is in one shard.
		for i, s := range p.Shards {
			if len(s.Tests) == 0 {
				if _, ok := s.Spec(i+1, n); ok {
					t.Fatalf("iter %d: an empty shard has a spec", iter)
				}
				continue
			}
			re := regexp.MustCompile(s.RunPattern())
			for id := range uniqueIDs(tests) {
				if re.MatchString(id.Name) != (where[id] == i) {
					t.Fatalf("iter %d: shard %d pattern %s vs %v (in shard %d)", iter, i, s.RunPattern(), id, where[id])
				}
			}
		}
		// Balance: max ≤ total/n + heaviest group.
		var total, maxLoad, heaviest time.Duration
		groups := map[string]time.Duration{}
		for _, s := range p.Shards {
			total += s.Estimate
			maxLoad = max(maxLoad, s.Estimate)
		}
		for _, s := range p.Shards {
			for _, id := range s.Tests {
				groups[id.Name] += weightOf(p, durations, id)
			}
		}
		for _, w := range groups {
			heaviest = max(heaviest, w)
		}
		if maxLoad > total/time.Duration(n)+heaviest+time.Duration(n) {
			t.Fatalf("iter %d: max shard %v > total %v / %d + heaviest %v", iter, maxLoad, total, n, heaviest)
		}
	}
}

func uniqueIDs(ts []TestID) map[TestID]bool {
	m := map[TestID]bool{}
	for _, t := range ts {
		m[t] = true
	}
	return m
}

// weightOf recomputes a test's weight as MakePlan documents it.
func weightOf(p Plan, durations map[TestID]time.Duration, id TestID) time.Duration {
	if p.Measured == 0 {
		return time.Second
	}
	if d, ok := durations[id]; ok {
		return d
	}
	var sum time.Duration
	n := 0
	for _, s := range p.Shards {
		for _, t := range s.Tests {
			if d, ok := durations[t]; ok {
				sum += d
				n++
			}
		}
	}
	return sum / time.Duration(n)
}

// Durations decide the split: one long test is alone in its shard, and
// without durations the split is by count.
func TestMakePlanUsesDurations(t *testing.T) {
	tests := []TestID{{"e2e", "TestLong"}, {"httpcomm", "TestA"}, {"httpcomm", "TestB"}, {"sshcomm", "TestC"}}
	p, err := MakePlan(tests, map[TestID]time.Duration{tests[0]: 90 * time.Second, tests[1]: 5 * time.Second, tests[2]: 6 * time.Second, tests[3]: 7 * time.Second}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Shards[0].Tests; !reflect.DeepEqual(got, []TestID{tests[0]}) {
		t.Errorf("shard 1 = %v; want only the long test", got)
	}
	if p.Shards[1].Estimate != 18*time.Second || p.Measured != 4 {
		t.Errorf("shard 2 estimate %v, measured %d", p.Shards[1].Estimate, p.Measured)
	}
	byCount, _ := MakePlan(tests, nil, 2)
	if len(byCount.Shards[0].Tests) != 2 || len(byCount.Shards[1].Tests) != 2 || byCount.Measured != 0 {
		t.Errorf("by count: %+v", byCount)
	}
	if _, err := MakePlan(tests, nil, 0); err == nil {
		t.Error("0 shards accepted")
	}
	spec, ok := p.Shards[1].Spec(2, 2)
	if !ok || spec.Name != "docker-shard-2-of-2" || !spec.Docker || spec.Run != "^(TestA|TestB|TestC)$" ||
		!reflect.DeepEqual(spec.Packages, []string{"./xtask/tests/docker/httpcomm/", "./xtask/tests/docker/sshcomm/"}) {
		t.Errorf("spec %+v", spec)
	}
	var b strings.Builder
	p.Print(&b, 2)
	if out := b.String(); !strings.Contains(out, "4 of 4 tests measured") || !strings.Contains(out, "shard 2/2") || strings.Contains(out, "shard 1/2") || !strings.Contains(out, "sshcomm.TestC") {
		t.Errorf("print:\n%s", out)
	}
}

func TestParseShard(t *testing.T) {
	if i, n, err := ParseShard("2/3"); err != nil || i != 2 || n != 3 {
		t.Errorf("2/3 → %d %d %v", i, n, err)
	}
	for _, bad := range []string{"", "3", "0/3", "4/3", "1/0", "a/b", "1/3/4", "-1/3"} {
		if _, _, err := ParseShard(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// ReadDurations takes each test's newest non-skipped top-level result and
// knows the categories by import path.
func TestReadDurations(t *testing.T) {
	dir := t.TempDir()
	write := func(name, ts, body string) {
		x := `<testsuites><testsuite name="github.com/rbee-dev/rbee/xtask/tests/docker/heartbeat" timestamp="` + ts + `">` + body + `</testsuite>` +
			`<testsuite name="github.com/rbee-dev/rbee/cmd/queen-rbee" timestamp="` + ts + `"><testcase name="TestUnit" time="1.0"></testcase></testsuite></testsuites>`
		if err := os.WriteFile(filepath.Join(dir, name), []byte(x), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("old.xml", "2026-01-01T00:00:00Z", `<testcase name="TestA" time="10.0"></testcase><testcase name="TestB" time="3.0"></testcase>`)
	write("new.xml", "2026-01-02T00:00:00Z", `<testcase name="TestA" time="20.5"></testcase><testcase name="TestA/sub" time="99"></testcase><testcase name="TestB" time="0.0"><skipped/></testcase>`)
	got, err := ReadDurations(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[TestID]time.Duration{{"heartbeat", "TestA"}: 20500 * time.Millisecond, {"heartbeat", "TestB"}: 3 * time.Second}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("durations %v; want %v", got, want)
	}
	if got, err := ReadDurations(filepath.Join(dir, "missing")); err != nil || len(got) != 0 {
		t.Errorf("missing dir: %v %v", got, err)
	}
}

// ListTests finds the Docker tests of the repository's own suites, by go
// test's rules (TestMain and helpers are not tests).
func TestListTests(t *testing.T) {
	ids, err := ListTests(filepath.Join("..", ".."), Categories)
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	for _, id := range ids {
		per[id.Category]++
		if id.Name == "TestMain" || !strings.HasPrefix(id.Name, "Test") {
			t.Errorf("not a test: %v", id)
		}
	}
	for _, c := range Categories {
		if per[c.Name] == 0 {
			t.Errorf("category %s: no tests found", c.Name)
		}
	}
	if !slices.Contains(ids, TestID{"heartbeat", "TestAfterQueenRestart"}) {
		t.Errorf("heartbeat.TestAfterQueenRestart not listed in %v", ids)
	}
}
