//go:build docker

package httpcomm

import (
	"context"
	"strconv"
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

// keepalive is the servers' keepalive interval on silent streams
// (PROTOCOL.md: every 15 s); the queen treats a hive stream as dead after
// max(2 × keepalive, [http] timeout) without a byte.
const keepalive = 15 * time.Second

// relayedJob is a model_download of suite.BigModel through the queen whose
// stream the test reads in the background, with each event's receive time.
type relayedJob struct {
	queenJob, hiveJob string
	done              chan relayedResult
}

// startRelayedDownload routes the queen's connections to relayHive through
// the toxic proxy (dropping any it holds from before, so the job's stream
// is proxied and a toxic added later acts on it), submits the download
// with the hub slowed to 2 mbit/s (~30 s) and returns once the hive job
// has sent its first progress event and is still running, with no resume
// logged for it yet (the control).
func startRelayedDownload(t *testing.T, ctx context.Context, h *integration.Harness, q *client.Client) relayedJob {
	t.Helper()
	h.MustInject(t, integration.RateLimit("hub", "2mbit"))
	h.MustInject(t, integration.Interpose("queen", relayHive))
	dropConnections(t, ctx, h, "queen", relayHive, hivePort)

	acc, err := q.Submit(ctx, api.JobRequest{Operation: api.OpModelDownload, HiveID: relayHive, Model: suite.BigModel})
	if err != nil {
		t.Fatalf("submit model_download: %v", err)
	}
	j := relayedJob{queenJob: acc.JobID, done: make(chan relayedResult, 1)}
	w := newForwardWatch()
	go func() {
		var times []time.Time
		evs, err := rawStream(ctx, q.BaseURL()+"/v1/jobs/"+acc.JobID+"/stream", 0, 0, func(ev sse.Event) {
			times = append(times, time.Now())
			_ = w.event(ev)
		})
		j.done <- relayedResult{evs: evs, times: times, err: err, end: time.Now()}
	}()
	j.hiveJob = awaitProgress(t, ctx, w, j.done, relayedResult.describe)
	hive, err := h.Hive(relayHive)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := hive.Job(ctx, j.hiveJob); err != nil || st.State != api.StateRunning {
		t.Fatalf("hive job %s before the fault: %+v, %v; the test needs it running", j.hiveJob, st, err)
	}
	if ls := hiveLogLines(t, h, relayHive, j.hiveJob, "stream resumed"); len(ls) != 0 {
		t.Fatalf("hive logged a resume of %s before any fault: %q", j.hiveJob, ls)
	}
	return j
}

// dropConnections aborts the established connections from has open to
// to:port, if it has any (an idle keep-alive connection may or may not be
// open), so that its next ones are new. Once a toxic is in force the list
// also holds the proxied connections and the proxy's own to the peer, so it
// is one pass: a connection that closed by itself between the listing and
// the cut is no error.
func dropConnections(t *testing.T, ctx context.Context, h *integration.Harness, from, to string, port int) {
	t.Helper()
	cs, err := h.Connections(ctx, from, to, port)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) > 0 {
		_, _ = h.CutConnections(ctx, from, to, port)
	}
}

func (j relayedJob) wait(t *testing.T, ctx context.Context) relayedResult {
	t.Helper()
	select {
	case r := <-j.done:
		return r
	case <-ctx.Done():
		t.Fatal("the queen's stream did not end")
	}
	return relayedResult{}
}

// resumesAfter are the Last-Event-IDs of the hive's "stream resumed" lines
// for job, in log order.
func resumesAfter(t *testing.T, h *integration.Harness, job string) []int {
	t.Helper()
	var ids []int
	for _, l := range hiveLogLines(t, h, relayHive, job, "stream resumed") {
		m := resumedAfter.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("resume line %q names no event", l)
		}
		n, _ := strconv.Atoi(m[1])
		ids = append(ids, n)
	}
	return ids
}

// A hive stream that hangs mid-job (the hive's data to the queen stops, the
// connection stays open: a Hang toxic on the live stream) is cut by the
// queen's idle timeout, resumed with Last-Event-ID (the hive logs each
// resume, after the last event the queen had), and — since every resume
// hangs too — the job ends [ERROR] naming the hive and the lost stream
// after [http] retries reconnects. Bounded from both sides: no earlier than
// the idle timeout plus one header timeout per reconnect after the last
// relayed event; no later than that plus the backoff and a margin after the
// hang. Recovered, the next job on the hive succeeds.
func TestHungHiveStreamEndsAtIdleTimeout(t *testing.T) {
	t.Parallel()
	const (
		timeout = 3 * time.Second // [http] in configs/full-stack/queen.toml
		retries = 2
	)
	h := integration.Start(t, integration.FullStack, integration.WithServices("queen", relayHive, "hub"))
	ctx := suite.Context(t, 6*time.Minute)
	q := h.MustQueen(t)
	if err := checks.AwaitHiveState(ctx, q, relayHive, api.HiveOnline, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	j := startRelayedDownload(t, ctx, h, q)
	h.MustInject(t, integration.Hang("queen", relayHive))
	hung := time.Now()
	t.Logf("hung the stream of hive job %s", j.hiveJob)

	r := j.wait(t, ctx)
	if r.err != nil {
		t.Fatalf("reading the queen's stream: %v\n%s", r.err, describeEvents(r.evs))
	}
	n := len(r.evs)
	if n == 0 || !r.evs[n-1].IsTerminator() {
		t.Fatalf("the queen's stream ended without a terminator:\n%s", describeEvents(r.evs))
	}
	term := r.evs[n-1].Data
	t.Logf("queen job %s ended %v after the hang: %s", j.queenJob, r.end.Sub(hung).Round(time.Millisecond), term)
	if !strings.HasPrefix(term, api.TermError) || !strings.Contains(term, relayHive) || !strings.Contains(term, "lost the job stream of "+j.hiveJob) {
		t.Fatalf("terminator %q; want [ERROR] naming %s and the lost stream of %s", term, relayHive, j.hiveJob)
	}
	relayedN, last := 0, time.Time{}
	for i, ev := range r.evs {
		if ev.ID != i+1 {
			t.Fatalf("event %d has id %d, want %d:\n%s", i, ev.ID, i+1, describeEvents(r.evs))
		}
		if fromHive(t, ev) {
			relayedN++
			last = r.times[i]
		}
	}
	idle := max(2*keepalive, timeout)
	floor := idle + retries*timeout
	// The last relayed event left the queen no later than the client got
	// it; a loaded machine may take a moment to relay it.
	const relaySlack = 2 * time.Second
	if got := r.end.Sub(last); got < floor-relaySlack {
		t.Errorf("the job ended %v after the last relayed event, want ≥ %v (idle %v + %d reconnects × header timeout %v)", got, floor, idle, retries, timeout)
	}
	backoff := 200 * time.Millisecond * (retries * (retries + 1) / 2)
	ceil := floor + backoff + 5*timeout
	if got := r.end.Sub(hung); got > ceil {
		t.Errorf("the job ended %v after the hang, want ≤ %v", got, ceil)
	}

	// The queen resumed with Last-Event-ID: each reconnect reached the hive
	// (only its answers are hung) after the last event it had relayed.
	ids := resumesAfter(t, h, j.hiveJob)
	if len(ids) != retries {
		t.Fatalf("hive logged %d resumes of %s, want %d ([http] retries): %v", len(ids), j.hiveJob, retries, ids)
	}
	for _, id := range ids {
		if id != relayedN {
			t.Errorf("a resume after event %d, want after %d, the last of the %d hive events relayed", id, relayedN, relayedN)
		}
	}

	h.MustRecover(t, integration.Hang("queen", relayHive))
	if _, err := checks.EndedDone(q.Run(ctx, hiveOp(relayHive), nil)); err != nil {
		t.Fatalf("a job on %s after the hang was recovered: %v", relayHive, err)
	}
}

// A toxic in the middle of an SSE relay, recovered while the queen still
// retries: the queen resumes the hive stream with Last-Event-ID, and once
// the toxic is recovered a resume succeeds; the client sees every hive
// event exactly once, in order, ids contiguous, one terminator, [DONE],
// and the hive ran the download once. reset-peer resets the live
// hive→queen stream at its next chunk; hang stops it with the connection
// open, so the queen's idle timeout has to notice. [http] retries is
// raised so that the queen's resumes (linear backoff) go on far longer
// than recovering the toxic takes: every resume made while the toxic is
// in force is reset or hung too, and delivers nothing.
func TestRelayResumesAfterToxic(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fault integration.Fault
	}{
		{"reset-peer", integration.ResetPeer("queen", relayHive, 0)},
		{"hang", integration.Hang("queen", relayHive)},
	} {
		t.Run(tc.name, func(t *testing.T) { relayResumesAfter(t, tc.fault) })
	}
}

func relayResumesAfter(t *testing.T, fault integration.Fault) {
	const retries = 30 // 200 ms × (1+…+30) = 93 s of backoff
	toml := queenToml(t, "full-stack", "retries = 2", "retries = "+strconv.Itoa(retries))
	h := integration.Start(t, integration.FullStack, integration.WithServices("queen", relayHive, "hub"),
		integration.WithFile("queen", "/etc/rbee/queen.toml", toml))
	ctx := suite.Context(t, 6*time.Minute)
	q := h.MustQueen(t)
	if err := checks.AwaitHiveState(ctx, q, relayHive, api.HiveOnline, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	j := startRelayedDownload(t, ctx, h, q)
	h.MustInject(t, fault)
	injected := time.Now()
	// The live stream is reset at its next chunk (a progress event, at the
	// latest a keepalive), or hung until the queen's idle timeout
	// (max(2 × keepalive, [http] timeout)): the queen's first resume
	// reaches the hive.
	var ids []int
	err := checks.Await(ctx, 2*keepalive+time.Minute, "the hive logs a resume of "+j.hiveJob, func(context.Context) (bool, string, error) {
		ids = resumesAfter(t, h, j.hiveJob)
		return len(ids) > 0, "no resume logged", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first resume of %s seen %v after %v, after event %d", j.hiveJob, time.Since(injected).Round(time.Millisecond), fault, ids[0])
	h.MustRecover(t, fault)

	r := j.wait(t, ctx)
	if r.err != nil {
		t.Fatalf("reading the queen's stream: %v\n%s", r.err, describeEvents(r.evs))
	}
	evs := r.evs
	mustOneDone(t, evs)
	want := mustRelayAll(t, ctx, h, relayHive, j.hiveJob, evs)
	ids = resumesAfter(t, h, j.hiveJob)
	if len(ids) == 0 || ids[0] == 0 {
		t.Fatalf("hive resumes of %s after %v; want at least one, with Last-Event-ID > 0", j.hiveJob, ids)
	}
	// The resumes under the toxic delivered nothing (reset_peer and hang
	// forward no data), so every resume is after the same event, the last
	// one the queen had before the toxic.
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("resumes after events %v, want all after %d", ids, ids[0])
		}
	}
	if len(ids) > retries {
		t.Fatalf("%d resumes, more than [http] retries (%d)", len(ids), retries)
	}
	if subs := hiveLogLines(t, h, relayHive, ": "+api.OpModelDownload+" started"); len(subs) != 1 {
		t.Fatalf("hive started %d model_download jobs, want 1: %q", len(subs), subs)
	}
	if st, err := q.Job(ctx, j.queenJob); err != nil || st.State != api.StateCompleted {
		t.Fatalf("queen job %s: %+v, %v; want completed", j.queenJob, st, err)
	}
	t.Logf("queen job %s: %d events; hive job %s: %d events and its terminator, resumed %d times, each after event %d",
		j.queenJob, len(evs), j.hiveJob, len(want), len(ids), ids[0])
}
