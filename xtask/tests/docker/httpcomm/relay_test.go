//go:build docker

package httpcomm

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

const (
	relayHive = "hive-1" // the hive suite.StartHive brings up
	hivePort  = 9000
	hiveLog   = "/home/rbee/.local/state/rbee/rbee-hive.log"
)

// hiveLogLines returns the lines of svc's hive log that contain every part.
func hiveLogLines(t *testing.T, h *integration.Harness, svc string, parts ...string) []string {
	t.Helper()
	out := suite.Sh(t, h, svc, "cat "+hiveLog)
	var ls []string
	for _, l := range strings.Split(out, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			ls = append(ls, l)
		}
	}
	return ls
}

// relayed is what an event says, independent of the queen's re-encoding:
// the name, and for narration the actor, action and message.
func relayed(t *testing.T, ev sse.Event) string {
	t.Helper()
	n, ok, err := client.Narration(ev)
	if err != nil {
		t.Fatalf("%v (%q)", err, ev.Data)
	}
	if !ok {
		return ev.Name + " " + ev.Data
	}
	return fmt.Sprintf("narration %s/%s %s", n.Actor, n.Action, n.Message)
}

// mustOneDone checks a client's stream from the queen: ids 1…N in order,
// exactly one terminator, last, and it is [DONE].
func mustOneDone(t *testing.T, evs []sse.Event) {
	t.Helper()
	terms := 0
	for i, ev := range evs {
		if ev.ID != i+1 {
			t.Fatalf("event %d has id %d, want %d:\n%s", i, ev.ID, i+1, describeEvents(evs))
		}
		if ev.IsTerminator() {
			terms++
		}
	}
	if terms != 1 || len(evs) == 0 || evs[len(evs)-1].Data != api.TermDone {
		t.Fatalf("want exactly one terminator, [DONE], last; got %d:\n%s", terms, describeEvents(evs))
	}
}

// fromHive reports whether ev of the queen's stream is one the queen
// relayed from the hive (not its own narration, not its terminator).
func fromHive(t *testing.T, ev sse.Event) bool {
	return !ev.IsTerminator() && !strings.HasPrefix(relayed(t, ev), "narration queen/")
}

// hiveJobEvents reads hiveJob's whole stream from the hive itself (its job
// API is signed: the harness's signed client), replayed from event 0.
func hiveJobEvents(t *testing.T, ctx context.Context, h *integration.Harness, hiveSvc, hiveJob string) []sse.Event {
	t.Helper()
	hive, err := h.Hive(hiveSvc)
	if err != nil {
		t.Fatal(err)
	}
	out, err := hive.FollowPath(ctx, "/v1/jobs/"+hiveJob+"/stream", hiveJob, 0, nil)
	if err != nil {
		t.Fatalf("hive stream of %s: %v", hiveJob, err)
	}
	return out.Events
}

// mustRelayAll checks that the queen's stream evs carries every event of
// the hive's job hiveJob (the hive's own record) exactly once and in
// order, and returns the hive's events without its terminator.
func mustRelayAll(t *testing.T, ctx context.Context, h *integration.Harness, hiveSvc, hiveJob string, evs []sse.Event) []string {
	t.Helper()
	var want, got []string
	for _, ev := range hiveJobEvents(t, ctx, h, hiveSvc, hiveJob) {
		if !ev.IsTerminator() {
			want = append(want, relayed(t, ev))
		}
	}
	for _, ev := range evs {
		if fromHive(t, ev) {
			got = append(got, relayed(t, ev))
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("relayed hive events differ from the hive's own %d events:\nrelayed (%d):\n  %s\nhive:\n  %s",
			len(want), len(got), strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	return want
}

var resumedAfter = regexp.MustCompile(`stream resumed after event (\d+)`)

// The queen's relay of a hive job survives the queen→hive connection being
// cut mid-job: the queen resumes the hive stream with Last-Event-ID (the
// hive logs the resume; the job is not submitted again), and the client sees
// every hive event exactly once, in order, ids contiguous, one terminator.
func TestRelayResumesCutHiveStream(t *testing.T) {
	t.Parallel()
	h, q := suite.StartHive(t)
	ctx := suite.Context(t, 5*time.Minute)
	h.MustInject(t, integration.RateLimit("hub", "2mbit"))

	// suite.BigModel is 8 MiB on the hub: at 2 mbit/s its download takes
	// ~30 s and reports progress every 10 %, a slow hive job with steady
	// events. Raw access: the queen's stream is read byte-exact by
	// rawStream below, and the hive's record by the hive's own client.
	var hist checks.History
	acc, err := hist.Submit(ctx, q, api.JobRequest{Operation: api.OpModelDownload, HiveID: relayHive, Model: suite.BigModel})
	if err != nil {
		t.Fatalf("submit model_download: %v", err)
	}
	// The reader reports the hive's job id and its first progress event;
	// the test cuts the connection then, with most of the download to go.
	w := newForwardWatch()
	done := make(chan relayedResult, 1)
	go func() {
		evs, err := rawStream(ctx, q.BaseURL()+"/v1/jobs/"+acc.JobID+"/stream", 0, 0, func(ev sse.Event) { _ = w.event(ev) })
		done <- relayedResult{evs: evs, err: err}
	}()
	hiveJob := awaitProgress(t, ctx, w, done, relayedResult.describe)
	hive, err := h.Hive(relayHive)
	if err != nil {
		t.Fatal(err)
	}
	st, err := hive.Job(ctx, hiveJob)
	if err != nil {
		t.Fatalf("hive GET /v1/jobs/%s: %v", hiveJob, err)
	}
	if st.State != api.StateRunning {
		t.Fatalf("hive job %s is %s before the cut; the test needs it running", hiveJob, st.State)
	}
	// Negative control: nothing was resumed before the cut.
	if ls := hiveLogLines(t, h, relayHive, hiveJob, "stream resumed"); len(ls) != 0 {
		t.Fatalf("hive logged a resume of %s before any cut: %q", hiveJob, ls)
	}
	cut := h.MustCutConnections(t, "queen", relayHive, hivePort)
	t.Logf("cut %v with hive job %s running", cut, hiveJob)

	var r relayedResult
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("the queen's stream did not end after the cut")
	}
	if r.err != nil {
		t.Fatalf("reading the queen's stream: %v\n%s", r.err, describeEvents(r.evs))
	}
	evs := r.evs

	// The client's stream: ids 1…N, exactly one terminator, last, [DONE].
	mustOneDone(t, evs)

	// Every event of the hive's job, exactly once and in order, on the
	// queen's stream: the hive's own record, read from the hive.
	want := mustRelayAll(t, ctx, h, relayHive, hiveJob, evs)
	if len(want) < 5 {
		t.Fatalf("the hive job had %d events; the test needs progress before and after the cut", len(want))
	}

	// At the hive: the stream was resumed once, after an event it had
	// sent, and the download was submitted exactly once.
	res := hiveLogLines(t, h, relayHive, hiveJob, "stream resumed")
	if len(res) != 1 {
		t.Fatalf("hive logged %d resumes of %s, want 1: %q", len(res), hiveJob, res)
	}
	m := resumedAfter.FindStringSubmatch(res[0])
	if m == nil || m[1] == "0" {
		t.Fatalf("resume line %q: want Last-Event-ID > 0", res[0])
	}
	if subs := hiveLogLines(t, h, relayHive, ": "+api.OpModelDownload+" started"); len(subs) != 1 {
		t.Fatalf("hive started %d model_download jobs, want 1: %q", len(subs), subs)
	}
	qst, err := q.Job(ctx, acc.JobID)
	if err != nil || qst.State != api.StateCompleted {
		t.Fatalf("queen job %s: %+v, %v; want completed", acc.JobID, qst, err)
	}
	t.Logf("queen job %s: %d events; hive job %s: %d events and its terminator, resumed after event %s", acc.JobID, len(evs), hiveJob, len(want), m[1])
	// The History reads the finished job again from its first event, so
	// that CheckNothingLost covers it as well.
	if _, err := hist.Adopt(ctx, q, api.OpModelDownload, acc.JobID, nil); err != nil {
		t.Fatalf("following queen job %s again: %v", acc.JobID, err)
	}
	suite.NothingLost(t, time.Minute, q, &hist)
}
