//go:build docker

package httpcomm

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// idEvent is one hive event as seen on one side: the id that side gave it
// and what it says (relayed, independent of the queen's re-encoding).
type idEvent struct {
	id   int
	what string
}

func describeIDEvents(side string, evs []idEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s id=%d %s\n", side, e.id, e.what)
	}
	return b.String()
}

// The queen's relay resumes a hive stream after the last event it relayed
// even when the hive has run ahead of it: the hive's progress events are
// held on the wire (the queen receives nothing) for longer than the
// queen's idle limit on a hive stream, so the queen gives the connection
// up and resumes with Last-Event-ID while the hive has produced many
// events it has not seen. The client's stream from the queen then carries
// every event of the hive's job exactly once and in order (compared with
// the hive's own stream of the job, replayed from the start), and the hive
// logs the resume after exactly the last event the queen had relayed.
func TestRelayResumesBehindRunningHive(t *testing.T) {
	t.Parallel()
	// 8 MiB at 128 KiB/s: the download takes 64 s at the least (the hub
	// paces it) and the hive narrates its progress at least once a second,
	// so during the hold below (the queen's idle limit, 30 s) the hive runs
	// about thirty events ahead of the queen, and the download is still
	// running when the queen resumes.
	const hubRate = 128 << 10
	// PROTOCOL.md: a hive stream silent for longer than max(2 × keepalive,
	// [http] timeout) is resumed with Last-Event-ID.
	queenIdle := max(2*keepaliveInterval, httpTimeout)
	h := integration.Start(t, integration.FullStack, integration.WithServices("queen", relayHive, "hub"),
		integration.WithEnv(map[string]string{"RBEE_HUB_RATE": strconv.Itoa(hubRate)}))
	ctx := suite.Context(t, 5*time.Minute)
	q := h.MustQueen(t)
	if err := checks.AwaitHiveState(ctx, q, relayHive, api.HiveOnline, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	acc, err := q.Submit(ctx, api.JobRequest{Operation: api.OpModelDownload, HiveID: relayHive, Model: suite.BigModel})
	if err != nil {
		t.Fatalf("submit model_download: %v", err)
	}
	// The reader keeps every event of the queen's stream as it arrives (no
	// reconnect of its own: what it reads is what the queen sent), and
	// reports the hive's job id and the first relayed progress event.
	var mu sync.Mutex
	var seen []sse.Event
	w := newForwardWatch()
	done := make(chan relayedResult, 1)
	go func() {
		evs, err := rawStream(ctx, q.BaseURL()+"/v1/jobs/"+acc.JobID+"/stream", 0, 0, func(ev sse.Event) {
			mu.Lock()
			seen = append(seen, ev)
			mu.Unlock()
			_ = w.event(ev)
		})
		done <- relayedResult{evs: evs, err: err}
	}()
	hiveJob := awaitProgress(t, ctx, w, done, relayedResult.describe)
	if ls := hiveLogLines(t, h, relayHive, hiveJob, "stream resumed"); len(ls) != 0 {
		t.Fatalf("hive logged a resume of %s before any fault: %q", hiveJob, ls)
	}

	// Hold every segment the hive sends from its port carrying a progress
	// event. TCP delivers in order, so the queen's stream stalls at the
	// first held one: nothing after it (keepalives included) reaches the
	// queen, while the hive keeps downloading and narrating.
	release, err := h.HoldReplies(ctx, relayHive, hivePort, "download_progress")
	if err != nil {
		t.Fatal(err)
	}
	released := false
	t.Cleanup(func() {
		if !released {
			_ = release(context.Background())
		}
	})
	held := time.Now()

	// The queen gives up the silent stream after queenIdle and resumes it:
	// the hive logs the resume. Allow the idle limit and one [http] timeout
	// for the reconnect, twice over for a loaded machine.
	var resumeLine string
	if err := checks.Await(ctx, 2*(queenIdle+httpTimeout), "the hive logs a resume of "+hiveJob, func(ctx context.Context) (bool, string, error) {
		ls := hiveLogLines(t, h, relayHive, hiveJob, "stream resumed")
		if len(ls) == 0 {
			return false, "no resume logged", nil
		}
		resumeLine = ls[0]
		return true, "", nil
	}); err != nil {
		t.Fatal(err)
	}
	resumedAt := time.Since(held)
	// The resumed connection's progress events are held too, so what the
	// client has now is everything the queen relayed before the resume.
	mu.Lock()
	before := append([]sse.Event(nil), seen...)
	mu.Unlock()
	if err := release(ctx); err != nil {
		t.Fatal(err)
	}
	released = true
	relayedBefore := 0
	for _, ev := range before {
		if !ev.IsTerminator() && !strings.HasPrefix(relayed(t, ev), "narration queen/") {
			relayedBefore++
		}
	}

	var r relayedResult
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("the queen's stream did not end after the hold was released")
	}
	if r.err != nil {
		t.Fatalf("reading the queen's stream: %v\n%s", r.err, describeEvents(r.evs))
	}
	evs := r.evs

	// The window was open: when the resume arrived, the hive had narrated
	// at least two events the queen had not relayed, so a resume one event
	// too far skips a real event instead of landing on the last one. The
	// hive logs each narration as it emits it, in the same log as the
	// resume, so the order of the log is the order of the two.
	all := hiveLogLines(t, h, relayHive, hiveJob)
	narrated := 0
	for _, l := range all {
		if l == resumeLine {
			break
		}
		if strings.Contains(l, "hive "+relayHive+": "+hiveJob+" ") {
			narrated++
		}
	}
	if narrated < relayedBefore+2 {
		t.Fatalf("when the queen resumed (%s after the hold), the hive had narrated %d events of %s and the queen had relayed %d; the test needs the hive at least 2 ahead",
			resumedAt.Round(time.Millisecond), narrated, hiveJob, relayedBefore)
	}

	// The client's stream: ids 1…N, exactly one terminator, last, [DONE].
	mustOneDone(t, evs)

	// Every event of the hive's job, exactly once and in order, on the
	// queen's stream: the hive's own record, replayed from the hive (its
	// job API is signed: the harness's signed client).
	var want, got []idEvent
	for i, ev := range hiveJobEvents(t, ctx, h, relayHive, hiveJob) {
		if ev.ID != i+1 {
			t.Fatalf("hive job %s: event %d has id %d, want %d", hiveJob, i, ev.ID, i+1)
		}
		want = append(want, idEvent{ev.ID, relayed(t, ev)})
	}
	for _, ev := range evs {
		if ev.IsTerminator() {
			continue
		}
		if s := relayed(t, ev); !strings.HasPrefix(s, "narration queen/") {
			got = append(got, idEvent{ev.ID, s})
		}
	}
	for i := range max(len(want), len(got)) {
		if i < len(want) && i < len(got) && want[i].what == got[i].what {
			continue
		}
		at := "the end of the relayed events"
		if i < len(got) {
			at = fmt.Sprintf("queen event id=%d %s", got[i].id, got[i].what)
		}
		exp := "the end of the hive's events"
		if i < len(want) {
			exp = fmt.Sprintf("hive event id=%d %s", want[i].id, want[i].what)
		}
		t.Fatalf("relayed hive event %d differs: %s; want %s (the queen had relayed %d hive events when it resumed; %s)\nrelayed (%d):\n%shive (%d):\n%s",
			i+1, at, exp, relayedBefore, resumeLine, len(got), describeIDEvents("queen", got), len(want), describeIDEvents("hive", want))
	}
	if relayedBefore >= len(want) {
		t.Fatalf("the queen had relayed all %d hive events before it resumed; the test needs events after the resume", len(want))
	}

	// At the hive: one resume, after exactly the last event the queen had
	// relayed (hive ids count from 1, so that is the number relayed), and
	// the download submitted once.
	res := hiveLogLines(t, h, relayHive, hiveJob, "stream resumed")
	if len(res) != 1 {
		t.Fatalf("hive logged %d resumes of %s, want 1: %q", len(res), hiveJob, res)
	}
	m := resumedAfter.FindStringSubmatch(res[0])
	if m == nil || m[1] != strconv.Itoa(relayedBefore) {
		t.Fatalf("resume line %q: want Last-Event-ID %d, the last hive event the queen relayed", res[0], relayedBefore)
	}
	if subs := hiveLogLines(t, h, relayHive, ": "+api.OpModelDownload+" started"); len(subs) != 1 {
		t.Fatalf("hive started %d model_download jobs, want 1: %q", len(subs), subs)
	}
	qst, err := q.Job(ctx, acc.JobID)
	if err != nil || qst.State != api.StateCompleted {
		t.Fatalf("queen job %s: %+v, %v; want completed", acc.JobID, qst, err)
	}
	t.Logf("queen resumed %s after the hold, after hive event %d, with the hive %d narrations ahead; hive job %s: %d events, all relayed once in order (queen job %s: %d events)",
		resumedAt.Round(time.Millisecond), relayedBefore, narrated-relayedBefore, hiveJob, len(want), acc.JobID, len(evs))
}
