package bench

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

const junit = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="github.com/rbee-dev/rbee/xtask/tests/docker/heartbeat" tests="4" failures="1" errors="0">
    <testcase name="TestStaleness" time="1.0"></testcase>
    <testcase name="TestFlaky" time="1.0"></testcase>
    <testcase name="TestFlaky/sub" time="1.0"><failure message="Failed">=== RUN   TestFlaky/sub
    flaky_test.go:12: want 3 workers fresh, got 2
--- FAIL: TestFlaky/sub (1.00s)
</failure></testcase>
    <testcase name="TestSkipped" time="0"><skipped message="skip"></skipped></testcase>
  </testsuite>
  <testsuite name="github.com/rbee-dev/rbee/xtask/tests/docker/e2e" tests="0" failures="1" errors="0"></testsuite>
  <testsuite name="github.com/rbee-dev/rbee/xtask/integration" tests="0" failures="0" errors="0"></testsuite>
</testsuites>`

func TestParseOutcomes(t *testing.T) {
	got, err := ParseOutcomes([]byte(junit))
	if err != nil {
		t.Fatal(err)
	}
	want := []Outcome{
		{"heartbeat.TestStaleness", false, ""},
		{"heartbeat.TestFlaky", true, "flaky_test.go:12: want 3 workers fresh, got 2"},                     // a failed subtest fails its test
		{"e2e.(package)", true, "the package failed without test results (build error, panic or timeout)"}, // failed without test cases
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ParseOutcomes = %v, want %v", got, want)
	}
	for _, tc := range []struct{ body, want string }{
		{"=== RUN   TestX\n--- FAIL: TestX\npanic: runtime error: index out of range [recovered]\n", "panic: runtime error: index out of range [recovered]"},
		{"==================\nWARNING: DATA RACE\nRead at 0x00c by goroutine 7:\n", "WARNING: DATA RACE"},
		{"", "Failed"},
	} {
		if got := failureLine(&junitText{Message: "Failed", Body: tc.body}); got != tc.want {
			t.Errorf("failureLine(%q) = %q, want %q", tc.body, got, tc.want)
		}
	}
	if _, err := ParseOutcomes([]byte("<testsuites><oops")); err == nil {
		t.Error("broken XML: no error")
	}
}

func TestFlakesAndSoakTables(t *testing.T) {
	runs := []SuiteRun{
		{Wall: time.Minute, Outcomes: []Outcome{{"p.A", false, ""}, {"p.B", true, ""}}},
		{Wall: time.Minute, Outcomes: []Outcome{{"p.A", false, ""}, {"p.B", false, ""}}, Leftovers: Leftovers{Containers: 1}},
	}
	fl := Flakes(outcomes(runs))
	if fmt.Sprint(fl) != fmt.Sprint([]FlakeRow{{"p.B", 2, 1, ""}, {"p.A", 2, 0, ""}}) {
		t.Errorf("Flakes = %v", fl)
	}
	ts := SoakTables(runs)
	md := ts[0].Markdown() + ts[1].Markdown()
	for _, want := range []string{"| 2 | 1m0s | 2 | 0 | 1/0/0 |", "| p.B | 1 | 2 |  |", "1 failed at least once; leftovers over all runs: 1"} {
		if !strings.Contains(md, want) {
			t.Errorf("soak tables lack %q:\n%s", want, md)
		}
	}
	clean := SoakTables(runs[:1][:0])
	if !strings.Contains(clean[1].Markdown(), "none: every one of 0 tests") {
		t.Errorf("empty soak: %s", clean[1].Markdown())
	}
}

func TestCountLeftovers(t *testing.T) {
	now := []resource{
		{kind: "container", id: "old"},                   // existed before the run: someone else's
		{kind: "container", id: "ours"},                  // no owner: counted
		{kind: "network", id: "n1", pid: 1 << 30},        // owner pid gone: counted
		{kind: "volume", id: "v1", pid: 1, start: "bad"}, // pid 1 runs, but another start time: counted
		{kind: "container", id: "live", pid: 1},          // a live owner (another engineer's running suite): not counted
	}
	got := countLeftovers(now, map[string]bool{"container old": true})
	if got != (Leftovers{Containers: 1, Networks: 1, Volumes: 1}) {
		t.Errorf("countLeftovers = %v", got)
	}
}

func TestProbesAndEffects(t *testing.T) {
	base := time.Unix(1000, 0)
	var out strings.Builder
	// Probes every 20 ms for 2 s: ok until 500 ms, failing until 1300 ms, ok after.
	for ms := 0; ms < 2000; ms += 20 {
		state := "ok"
		if ms >= 500 && ms < 1300 {
			state = "fail"
		}
		fmt.Fprintf(&out, "%d %s\n", base.Add(time.Duration(ms)*time.Millisecond).UnixNano(), state)
	}
	ps, err := parseProbes(out.String())
	if err != nil {
		t.Fatal(err)
	}
	block, restore, ok := effects(ps, base.Add(510*time.Millisecond), base.Add(1290*time.Millisecond))
	if !ok || block != -10*time.Millisecond || restore != 10*time.Millisecond {
		t.Errorf("effects = %v, %v, %v; want -10ms, 10ms, true", block, restore, ok)
	}
	// A stray failure long before the block does not count as the drop.
	ps[3].ok = false
	if block2, _, ok := effects(ps, base.Add(510*time.Millisecond), base.Add(1290*time.Millisecond)); !ok || block2 != block {
		t.Errorf("with a stray failure: block %v, %v", block2, ok)
	}
	// A stray failure after the recovery does not move it.
	ps[80].ok = false
	if _, r2, ok := effects(ps, base.Add(510*time.Millisecond), base.Add(1290*time.Millisecond)); !ok || r2 != restore {
		t.Errorf("with a late stray failure: restore %v, %v", r2, ok)
	}
	// The last probe stamped before the restore call connected only after
	// the rules were gone: the drop is still the long run before it.
	// It is the first to see traffic flowing again.
	ps[62].ok = true
	if block3, r3, ok := effects(ps, base.Add(510*time.Millisecond), base.Add(1290*time.Millisecond)); !ok || block3 != block || r3 != -50*time.Millisecond {
		t.Errorf("with the last probe before the restore ok: %v, %v, %v; want %v, -50ms", block3, r3, ok, block)
	}
	ps[62].ok = false
	// Never dropped: not ok.
	if _, _, ok := effects(ps[:20], base.Add(100*time.Millisecond), base.Add(200*time.Millisecond)); ok {
		t.Error("no failures: effects ok")
	}
	// Never recovered: not ok.
	if _, _, ok := effects(ps[:50], base.Add(510*time.Millisecond), base.Add(900*time.Millisecond)); ok {
		t.Error("no recovery: effects ok")
	}
	if got := runs(ps[:30]); got != "3 ok, 1 fail, 21 ok, 5 fail" {
		t.Errorf("runs = %q", got)
	}
	for _, bad := range []string{"123", "abc ok", "123 maybe"} {
		if _, err := parseProbes(bad); err == nil {
			t.Errorf("parseProbes(%q): no error", bad)
		}
	}
	if !strings.Contains(probeScript("http://queen:8500/health", 4), "curl -fsS -o /dev/null -m 0.3 http://queen:8500/health") {
		t.Error(probeScript("http://queen:8500/health", 4))
	}
}

func TestOptionsFromEnv(t *testing.T) {
	t.Setenv("RBEE_BENCH_RUNS", "7")
	t.Setenv("RBEE_BENCH_SUITE", "0")
	var o Options
	if err := o.FromEnv(); err != nil || o.Runs != 7 || o.Suite {
		t.Errorf("FromEnv = %+v, %v", o, err)
	}
	for _, bad := range [][2]string{{"RBEE_BENCH_RUNS", "0"}, {"RBEE_BENCH_READERS", "x"}, {"RBEE_BENCH_SUITE", "yes"}} {
		t.Run(bad[0]+"="+bad[1], func(t *testing.T) {
			t.Setenv("RBEE_BENCH_SUITE", "1")
			t.Setenv(bad[0], bad[1])
			var o Options
			if err := o.FromEnv(); err == nil {
				t.Error("no error")
			}
		})
	}
}
