package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// junitFixture is a gotestsum JUnit file with a failed test (with a failed
// subtest), a passed one and a skipped one in two packages.
const junitFixture = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
 <testsuite name="github.com/rbee-dev/rbee/xtask/tests/docker/failure" tests="3" failures="2" time="40.1">
  <testcase classname="failure" name="TestPartition" time="21.5"><failure message="Failed">=== RUN TestPartition
    partition_test.go:42: start
    partition_test.go:77: hive hive-1 online: not true within 10s
--- FAIL: TestPartition</failure></testcase>
  <testcase classname="failure" name="TestPartition/sub" time="3.0"><failure message="Failed">x</failure></testcase>
  <testcase classname="failure" name="TestCrash" time="12.25"></testcase>
 </testsuite>
 <testsuite name="github.com/rbee-dev/rbee/xtask/tests/docker/heartbeat" tests="1" failures="0" time="2">
  <testcase classname="heartbeat" name="TestSkipped" time="0.01"><skipped message="skip"></skipped></testcase>
 </testsuite>
</testsuites>`

const junitPassing = `<testsuites><testsuite name="github.com/rbee-dev/rbee/xtask/tests/docker/failure" tests="2" failures="0">
  <testcase name="TestPartition" time="20"></testcase><testcase name="TestCrash" time="11"></testcase></testsuite></testsuites>`

func TestReadResults(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "docker.xml")
	if err := os.WriteFile(f, []byte(junitFixture), 0o644); err != nil {
		t.Fatal(err)
	}
	rs, err := ReadResults([]string{f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]TestResult{}
	for _, r := range rs {
		got[r.Name] = r
	}
	if len(rs) != 3 || got["TestPartition"].Result != "failed" || got["TestCrash"].Result != "passed" || got["TestSkipped"].Result != "skipped" {
		t.Fatalf("results %+v", rs)
	}
	if p := got["TestPartition"]; p.Message != "partition_test.go:77: hive hive-1 online: not true within 10s" || p.Duration.Seconds() != 21.5 || p.Category != "failure" {
		t.Fatalf("TestPartition: %+v", p)
	}
	if _, err := ReadResults([]string{filepath.Join(dir, "missing.xml")}, nil); err == nil {
		t.Fatal("a missing file is an error")
	}
}

// TestWriteRun: failures come first and link their report; the flake
// history has one cell per run.
func TestWriteRun(t *testing.T) {
	dir := t.TempDir()
	res := filepath.Join(dir, "test-results")
	arts := filepath.Join(dir, "artifacts")
	run1, run2 := filepath.Join(res, "soak-1.xml"), filepath.Join(res, "soak-2.xml")
	for f, s := range map[string]string{run1: junitPassing, run2: junitFixture} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Write(filepath.Join(arts, "TestPartition"), &Timeline{Test: "TestPartition", Duration: 1, Failed: true}); err != nil {
		t.Fatal(err)
	}
	out, err := WriteRun(RunInput{Title: "soak", Files: []string{run2}, History: [][]string{{run1}, {run2}}, Artifacts: arts, Out: filepath.Join(res, "report.html")})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{`<a class="report-link" href="../artifacts/TestPartition/report.html">`, `1 passed, 1 failed, 1 skipped`,
		`<span class="cell passed"`, `<span class="cell failed"`, `data-test="TestCrash"`, "not true within 10s"} {
		if !strings.Contains(s, want) {
			t.Errorf("run report lacks %q", want)
		}
	}
	if i, j := strings.Index(s, `id="failures"`), strings.Index(s, `id="categories"`); i < 0 || i > j {
		t.Error("failures are not first")
	}
}
