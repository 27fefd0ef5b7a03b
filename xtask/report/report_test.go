package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// synthetic is a busy 60 s nemesis-style run on the full-stack topology: a
// fault every few seconds, heartbeats of two hives and two workers every
// second, hundreds of jobs and the services' log lines up to the
// recorder's bounds.
func synthetic(seconds float64) *Timeline {
	rng := rand.New(rand.NewPCG(1, 2))
	lanes := []string{"queen", "hive-1", "hive-2", "worker-1", "worker-2", "hub"}
	tl := &Timeline{Test: "TestSynthetic/nemesis", Run: "rbee-synthetic-abc", Topology: "full-stack", Start: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Duration: seconds, Failed: true, Lanes: lanes}
	for _, l := range lanes {
		tl.Events = append(tl.Events, Event{T: 0.1, Lane: l, Kind: KindLifecycle, Text: "create"}, Event{T: 0.3, Lane: l, Kind: KindLifecycle, Text: "start"})
	}
	for t := 1.0; t < seconds; t++ {
		for _, l := range lanes[1:5] {
			tl.Events = append(tl.Events, Event{T: t + rng.Float64()*0.2, Lane: l, Kind: KindHeartbeat, Text: l + " last_seen"})
		}
	}
	for t := 2.0; t < seconds-3; t += 3 + rng.Float64()*3 {
		a, b := lanes[rng.IntN(3)], lanes[3+rng.IntN(3)]
		end := t + 1 + rng.Float64()*3
		tl.Faults = append(tl.Faults, Span{Start: t, End: end, Lanes: []string{a, b}, Text: fmt.Sprintf("block %s→%s (drop)", a, b),
			Rules: "in " + a + "'s network namespace:\niptables -w -A RBEE-OUT -d 172.29.7.21 -m conntrack --ctdir ORIGINAL -j DROP"})
		tl.Events = append(tl.Events, Event{T: t + 0.5, Lane: a, Kind: KindState, Text: "hive " + a + " offline"}, Event{T: end + 0.5, Lane: a, Kind: KindState, Text: "hive " + a + " online"})
	}
	tl.Faults = append(tl.Faults, Span{Start: seconds - 8, End: seconds, Open: true, Lanes: []string{"queen", "hive-1"}, Text: "partition(queen|hive-1)"})
	for i := 0; i < 600; i++ {
		s := rng.Float64() * (seconds - 1)
		j := Job{ID: fmt.Sprintf("job-%04d", i), Op: "infer", Submit: s, End: s + 0.05 + rng.ExpFloat64()*0.4, Ended: true, Terminator: "[DONE]", Events: 12}
		if i%17 == 0 {
			j.Terminator = "[ERROR] hive-1 unreachable"
		}
		tl.Jobs = append(tl.Jobs, j)
	}
	for i := 0; i < 120; i++ {
		s := rng.Float64() * (seconds - 2)
		tl.Checks = append(tl.Checks, Check{Start: s, End: s + rng.Float64()*2, Done: true, OK: i != 119, What: "hive hive-1 online (within 10s)"})
	}
	for _, l := range lanes {
		for i := 0; i < 1500; i++ {
			tl.Logs = append(tl.Logs, LogLine{T: float64(i) / 1500 * seconds, Lane: l,
				Text: strings.Repeat("x", 60+rng.IntN(140)) + " level=info msg=\"heartbeat\" <script>alert(1)</script>"})
		}
	}
	tl.Events = append(tl.Events, Event{T: seconds - 4, Kind: KindFailure, Text: "hive hive-1 online: not true within 10s; last seen: hive-1 is offline; want online"},
		Event{T: 1, Kind: KindNote, Text: "nemesis seed 42", Link: "nemesis.json"})
	return tl
}

// TestReportOfSixtySecondRun writes the report of a synthetic 60 s nemesis
// run at the recorder's bounds and checks its size and what it shows.
func TestReportOfSixtySecondRun(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "queen.log"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "capture.pcap"), []byte("pcap"), 0o644); err != nil {
		t.Fatal(err)
	}
	tl := synthetic(60)
	t0 := time.Now()
	p, err := Write(dir, tl)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	html, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	js, err := os.ReadFile(filepath.Join(dir, JSONName))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("60 s synthetic run: report.html %d bytes, timeline.json %d bytes, written in %v (%d events, %d jobs, %d log lines)",
		len(html), len(js), took, len(tl.Events), len(tl.Jobs), len(tl.Logs))
	if len(html) >= 5<<20 {
		t.Errorf("report.html is %d bytes, want < 5 MB", len(html))
	}
	if len(html) < 100<<10 {
		t.Errorf("report.html is only %d bytes: the logs are missing", len(html))
	}
	s := string(html)
	for _, want := range []string{`class="fault-span"`, `id="failure-marker"`, `href="capture.pcap"`, `href="queen.log"`, `href="nemesis.json"`,
		"partition(queen|hive-1)", `id="latency"`, "not true within 10s"} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(s, "<script>alert(1)") {
		t.Error("a log line's markup reached the page unescaped")
	}
	if regexp.MustCompile(`(?i)(src|href)="(https?:)?//`).MatchString(s) {
		t.Error("the report references a network resource; it must be self-contained")
	}
	var back Timeline
	if err := json.Unmarshal(js, &back); err != nil || back.Test != tl.Test || len(back.Logs) != len(tl.Logs) {
		t.Errorf("timeline.json does not round-trip: %v", err)
	}
}

// TestFailureAndActiveFaults: the pinned failure is the assertion, not the
// "marked failed" fallback, and the faults in force are those spanning it.
func TestFailureAndActiveFaults(t *testing.T) {
	tl := &Timeline{Duration: 20, Lanes: []string{"queen", "hive-1"},
		Faults: []Span{{Start: 2, End: 5, Text: "healed"}, {Start: 6, End: 20, Open: true, Text: "block hive-1→queen (drop)"}, {Start: 13, End: 14, Text: "later"}},
		Events: []Event{{T: 12.5, Kind: KindFailure, Text: DetectedText}, {T: 12, Kind: KindFailure, Text: "await hive online: not true"}}}
	f, ok := tl.Failure()
	if !ok || f.T != 12 || f.Text != "await hive online: not true" {
		t.Fatalf("Failure() = %+v, %v; want the assertion at 12 s", f, ok)
	}
	act := tl.ActiveAt(f.T)
	if len(act) != 1 || act[0].Text != "block hive-1→queen (drop)" {
		t.Fatalf("ActiveAt(12) = %+v, want only the block", act)
	}
	// Without an assertion the failed check before the fallback is pinned.
	tl.Events = tl.Events[:1]
	tl.Checks = []Check{{Start: 1, End: 11, Done: true, Err: "not true within 10s", What: "hive hive-1 online"}}
	if f, _ := tl.Failure(); f.T != 11 || !strings.Contains(f.Text, "hive hive-1 online") {
		t.Fatalf("Failure() = %+v, want the failed check at 11 s", f)
	}
	tl.Checks = nil
	if f, _ := tl.Failure(); f.T != 12.5 {
		t.Fatalf("Failure() = %+v, want the fallback at 12.5 s", f)
	}
	if _, ok := (&Timeline{}).Failure(); ok {
		t.Fatal("an empty timeline has no failure")
	}
}

// BenchmarkRender: rendering the 60 s run, the part of report generation
// that is not reading logs from Docker.
func BenchmarkRender(b *testing.B) {
	tl := synthetic(60)
	var buf bytes.Buffer
	for b.Loop() {
		buf.Reset()
		if err := Render(&buf, tl, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(buf.Len()), "bytes")
}

func TestPackJobs(t *testing.T) {
	rows, n := packJobs([]Job{{Submit: 0, End: 2}, {Submit: 1, End: 3}, {Submit: 2, End: 4}, {Submit: 2.5, End: 5}})
	if want := []int{0, 1, 0, 2}; fmt.Sprint(rows) != fmt.Sprint(want) || n != 3 {
		t.Fatalf("rows %v (%d), want %v (3)", rows, n, want)
	}
}

// BenchmarkWrite: the whole of Write (timeline.json and report.html) for
// the 60 s run.
func BenchmarkWrite(b *testing.B) {
	tl := synthetic(60)
	dir := b.TempDir()
	for b.Loop() {
		if _, err := Write(dir, tl); err != nil {
			b.Fatal(err)
		}
	}
}
