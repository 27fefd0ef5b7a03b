//go:build docker

package e2e

import (
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// startMultiHive brings up the multi-hive topology (queen, hive-1, hive-2,
// no hub), waits for both hives' heartbeats and seeds suite.TinyModel into both
// catalogs.
func startMultiHive(t *testing.T) (*integration.Harness, *client.Client) {
	t.Helper()
	h := integration.Start(t, integration.MultiHive)
	q := h.MustQueen(t)
	awaitOnline(t, q, "hive-1", "hive-2")
	for _, hv := range []string{"hive-1", "hive-2"} {
		suite.SeedModel(t, h, q, hv, suite.TinyModel)
	}
	return h, q
}

// Sequential infer jobs over two hives alternate between them, as the
// "hive picked longest ago" rule says, even though hive-1 has two workers
// and hive-2 one: a scheduler that rotated over workers, picked at random or
// always took the first candidate would not produce this sequence. The
// workers' own logs agree with where the queen says it sent each job.
func TestMultiHiveSequentialAlternation(t *testing.T) {
	t.Parallel()
	h, q := startMultiHive(t)
	var hist checks.History
	hiveOf := map[string]string{}
	var ids []string
	for _, hv := range []string{"hive-1", "hive-1", "hive-2"} {
		w := suite.SpawnWorker(t, q, &hist, hv, suite.TinyModel)
		hiveOf[w.WorkerID] = hv
		ids = append(ids, w.WorkerID)
	}

	const n = 8
	var seq []string
	perWorker := map[string]int{}
	for i := range n {
		// Every worker idle first: the pick is then decided by the rule
		// under test, not by a busy state in a heartbeat still on its way.
		if err := suite.AwaitIdle(t.Context(), q, ids, stateTimeout); err != nil {
			t.Fatal(err)
		}
		seed := uint64(i)
		_, rt := suite.Infer(t, q, &hist, api.JobRequest{Model: suite.TinyModel, Seed: &seed})
		if hiveOf[rt.WorkerID] != rt.Hive {
			t.Fatalf("job %d routed to %+v; the workers are %v", i, rt, hiveOf)
		}
		seq = append(seq, rt.Hive)
		perWorker[rt.WorkerID]++
	}
	t.Logf("hives in order: %s", strings.Join(seq, " "))
	for i := 1; i < n; i++ {
		if seq[i] == seq[i-1] {
			t.Fatalf("jobs %d and %d both went to %s (sequence %v); want the hive picked longest ago each time, so strict alternation", i-1, i, seq[i], seq)
		}
	}
	for w, hv := range hiveOf {
		if got := suite.WorkerInferences(t, h, hv, w); got != perWorker[w] {
			t.Errorf("worker %s on %s accepted %d inferences; the queen routed %d to it", w, hv, got, perWorker[w])
		}
	}
	suite.NothingLost(t, opTimeout, q, &hist)
}

// With one hive's worker busy on a long job, sequential jobs all go to the
// other hive: fewer inferences in flight wins over the hive picked longest
// ago. Without the in-flight count they would alternate onto the busy
// worker; without the hive rule they could not be told apart from this.
func TestMultiHiveLeastInFlightFirst(t *testing.T) {
	t.Parallel()
	h, q := startMultiHive(t)
	var hist checks.History
	w1 := suite.SpawnWorker(t, q, &hist, "hive-1", suite.TinyModel)
	w2 := suite.SpawnWorker(t, q, &hist, "hive-2", suite.TinyModel)

	// The long job, pinned to hive-1: 2048 tokens at the worker's token
	// delay is about ten seconds, far longer than the short jobs below.
	ctx := suite.Context(t, opTimeout)
	acc, long := suite.Submit(ctx, t, q, &hist, api.JobRequest{Operation: api.OpInfer, Model: suite.TinyModel, HiveID: "hive-1", Prompt: "Alice", MaxTokens: api.MaxMaxTokens}, nil)
	if _, err := checks.AwaitWorker(ctx, q, w1.WorkerID, stateTimeout, "busy", func(w api.WorkerInfo) bool { return w.State == api.WorkerBusy }); err != nil {
		t.Fatal(err)
	}

	const n = 4
	for i := range n {
		if err := suite.AwaitIdle(ctx, q, []string{w2.WorkerID}, stateTimeout); err != nil {
			t.Fatal(err)
		}
		_, rt := suite.Infer(t, q, &hist, api.JobRequest{Model: suite.TinyModel})
		if rt.WorkerID != w2.WorkerID {
			t.Fatalf("job %d, with %s busy on the long job, went to %+v; want %s on hive-2 (fewest in flight)", i, w1.WorkerID, rt, w2.WorkerID)
		}
	}
	// The window was real: the long job was still running on hive-1
	// when the last short job ended.
	st, err := q.Job(ctx, acc.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "running" {
		t.Fatalf("long job %s is %s after the short jobs; the test needs it running throughout (raise its length)", acc.JobID, st.State)
	}
	if got := suite.WorkerInferences(t, h, "hive-1", w1.WorkerID); got != 1 {
		t.Errorf("worker %s on hive-1 accepted %d inferences; want only the long one", w1.WorkerID, got)
	}
	if got := suite.WorkerInferences(t, h, "hive-2", w2.WorkerID); got != n {
		t.Errorf("worker %s on hive-2 accepted %d inferences; want %d", w2.WorkerID, got, n)
	}
	if _, err := q.Cancel(ctx, acc.JobID); err != nil {
		t.Fatal(err)
	}
	if out := (<-long).Out; out.Terminator() != api.TermCancelled {
		t.Fatalf("long job ended %s after DELETE; want %s", out.Terminator(), api.TermCancelled)
	}
	suite.NothingLost(t, opTimeout, q, &hist)
}
