package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/xtask/testrun"
)

func specSummary(specs []testrun.Spec) string {
	var b strings.Builder
	for _, s := range specs {
		fmt.Fprintf(&b, "%s docker=%v race=%v run=%q %s\n", s.Name, s.Docker, s.Race, s.Run, strings.Join(s.Packages, " "))
	}
	return b.String()
}

func TestSoakSpecsWhole(t *testing.T) {
	specs, err := SoakSpecs("soak-1", SoakOptions{Runs: 1, Stress: true})
	if err != nil {
		t.Fatal(err)
	}
	got := specSummary(specs)
	if len(specs) != 3 || specs[0].Packages[0] != "./..." || !specs[0].Race || specs[0].Docker ||
		!specs[1].Docker || specs[1].Race || len(specs[1].Packages) != len(testrun.Categories)-1 ||
		!specs[2].Docker || !specs[2].Race || specs[2].Packages[0] != "./xtask/integration/" {
		t.Fatalf("stressed soak runs:\n%s", got)
	}
	specs, err = SoakSpecs("soak-1", SoakOptions{Runs: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 1 || !specs[0].Docker || specs[0].Race || len(specs[0].Packages) != len(testrun.Categories) {
		t.Fatalf("unstressed soak runs:\n%s", specSummary(specs))
	}
}

func TestSoakSpecsSubset(t *testing.T) {
	o := SoakOptions{Runs: 1, Stress: true, Only: []string{"./internal/queen/", "heartbeat", " harness", "./internal/sshx/...", "heartbeat"}, Run: "TestA$|TestB$"}
	specs, err := SoakSpecs("soak-2", o)
	if err != nil {
		t.Fatal(err)
	}
	want := `soak-2-unit docker=false race=true run="TestA$|TestB$" ./internal/queen/ ./internal/sshx/...
soak-2-docker docker=true race=false run="TestA$|TestB$" ./xtask/tests/docker/heartbeat/
soak-2-harness docker=true race=true run="TestA$|TestB$" ./xtask/integration/
`
	if got := specSummary(specs); got != want {
		t.Fatalf("got:\n%swant:\n%s", got, want)
	}
	// Only what is named runs: no Docker spec for unit packages alone.
	specs, err = SoakSpecs("s", SoakOptions{Runs: 1, Only: []string{"./internal/queen/"}})
	if err != nil || len(specs) != 1 || specs[0].Docker || specs[0].Race {
		t.Fatalf("unit-only subset: %v\n%s", err, specSummary(specs))
	}
	if d := describeSubset(o); !strings.Contains(d, "./internal/queen/") || !strings.Contains(d, "TestA$|TestB$") {
		t.Fatalf("describeSubset = %q", d)
	}
}

func TestSoakSpecsRefuses(t *testing.T) {
	for _, tc := range []struct {
		only []string
		want string
	}{
		{[]string{"heartbeats"}, `"heartbeats" is neither a Docker category nor a package pattern`},
		{[]string{"internal/queen"}, `"internal/queen" is neither`},
		{[]string{"", " "}, "names no package"},
	} {
		_, err := SoakSpecs("s", SoakOptions{Runs: 1, Only: tc.only})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Only %q: err %v, want %q", tc.only, err, tc.want)
		}
	}
	if _, err := SoakWith(t.Context(), t.TempDir(), SoakOptions{Runs: 1, Only: []string{"nope"}}, t.Logf); err == nil {
		t.Fatal("SoakWith ran with a bad subset")
	}
}

// pgroup lists the pids in process group pgid.
func pgroup(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp …
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) {
			out = append(out, pid)
		}
	}
	return out
}

// stress-ng, where installed, runs one worker per requested CPU besides its
// parent, and Stop leaves none of its process group behind.
func TestStartStressNG(t *testing.T) {
	t.Setenv(StressNGEnv, "")
	b, err := StartStress(2)
	if err != nil {
		t.Fatal(err)
	}
	if b.Kind() != "stress-ng" {
		b.Stop()
		t.Skip("stress-ng is not installed (the Go burner is used; TestStartStressGo)")
	}
	pgid := b.cmd.Process.Pid
	deadline := time.Now().Add(30 * time.Second)
	for len(pgroup(pgid)) < 3 {
		if time.Now().After(deadline) || !b.Running() {
			b.Stop()
			t.Fatalf("stress-ng --cpu 2: process group %d has %v, want the parent and 2 workers", pgid, pgroup(pgid))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, wall := b.Stop(); wall <= 0 {
		t.Fatalf("wall %v", wall)
	}
	if b.Running() {
		t.Fatal("stress-ng still running after Stop")
	}
	deadline = time.Now().Add(30 * time.Second)
	for len(pgroup(pgid)) > 0 { // workers are reaped by init once killed
		if time.Now().After(deadline) {
			t.Fatalf("after Stop, process group %d still has %v", pgid, pgroup(pgid))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RBEE_STRESS_NG=0 selects the Go burner, which does work until stopped.
func TestStartStressGo(t *testing.T) {
	t.Setenv(StressNGEnv, "0")
	b, err := StartStress(1)
	if err != nil {
		t.Fatal(err)
	}
	if b.Kind() != "Go burner" || !strings.Contains(stressKind(1), "Go threads") {
		b.Stop()
		t.Fatalf("kind %q / %q with %s=0", b.Kind(), stressKind(1), StressNGEnv)
	}
	deadline := time.Now().Add(30 * time.Second)
	for b.spins.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	blocks, _ := b.Stop()
	if blocks == 0 {
		t.Fatal("the Go burner did no work in 30 s")
	}
	if after := b.spins.Load(); after != blocks {
		t.Fatalf("work after Stop: %d then %d", blocks, after)
	}
}

// A soak of unit packages only runs without an engine (none is asked for
// its resources) and reports its failures per test; its tables say that
// leftovers were not counted.
func TestSoakUnitSubsetNeedsNoEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go test")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "no-engine.sock"))
	specs, err := SoakSpecs("unit-only", SoakOptions{Runs: 1, Only: []string{"./xtask/dockerx/"}, Run: "TestFilterAndName$"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := runSpecs(t.Context(), root, t.TempDir(), specs...)
	if err != nil {
		t.Fatalf("unit-only run: %v", err)
	}
	if r.Err != nil || !r.NoDocker || len(r.Outcomes) != 1 || r.Outcomes[0].Test != "dockerx.TestFilterAndName" || r.Outcomes[0].Failed {
		t.Fatalf("run %+v", r)
	}
	tables := SoakTables([]SuiteRun{r})
	if md := tables[0].Markdown(); !strings.Contains(md, "n/a (no Docker tests)") {
		t.Fatalf("per-run table does not say leftovers were not counted:\n%s", md)
	}
}
