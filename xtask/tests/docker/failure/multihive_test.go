//go:build docker

package failure

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// startTwoHives brings up the multi-hive topology (no hub), seeds suite.TinyModel
// into both catalogs and spawns one worker on each hive; it returns the
// workers by hive.
func startTwoHives(t *testing.T, hist *checks.History) (*integration.Harness, *client.Client, map[string]api.WorkerProcess) {
	t.Helper()
	h := integration.Start(t, integration.MultiHive)
	q := h.MustQueen(t)
	ws := map[string]api.WorkerProcess{}
	for _, hv := range []string{"hive-1", "hive-2"} {
		awaitHive(t, q, hv, api.HiveOnline)
		suite.SeedModel(t, h, q, hv, suite.TinyModel)
		ws[hv] = suite.SpawnWorker(t, q, hist, hv, suite.TinyModel)
	}
	return h, q, ws
}

// accepted is what the worker's own log says it accepted, per hive.
func accepted(t *testing.T, h *integration.Harness, ws map[string]api.WorkerProcess) map[string]int {
	t.Helper()
	n := map[string]int{}
	for hv, w := range ws {
		n[hv] = suite.WorkerInferences(t, h, hv, w.WorkerID)
	}
	return n
}

// hive-1 partitioned from the queen while hive-2 keeps serving: a long job
// already running on hive-2 ends [DONE] across the partition; once hive-1 is
// offline every unpinned job runs on hive-2 (hive-1's worker receives none,
// by its own log), a job pinned to hive-1 ends [ERROR] at once; after the
// heal both hives serve again, and no job is lost.
func TestPartitionedHiveOtherServes(t *testing.T) {
	t.Parallel()
	var hist checks.History
	h, q, ws := startTwoHives(t, &hist)
	w1, w2 := ws["hive-1"], ws["hive-2"]

	// In flight on hive-2 across the partition: about ten seconds of tokens.
	ctx := suite.Context(t, 3*time.Minute)
	_, long := suite.Submit(ctx, t, q, &hist, api.JobRequest{Operation: api.OpInfer, Model: suite.TinyModel, HiveID: "hive-2", Prompt: "Alice", MaxTokens: api.MaxMaxTokens}, nil)
	awaitWorker(t, q, w2.WorkerID, "busy with the long job", func(w api.WorkerInfo) bool { return w.State == api.WorkerBusy })

	h.MustInject(t, integration.Partition("queen", "hive-1"))
	awaitHive(t, q, "hive-1", api.HiveOffline)
	awaitWorker(t, q, w1.WorkerID, "stale while partitioned", checks.Stale)
	if hv, err := checks.Hive(ctx, q, "hive-2"); err != nil || hv.State != api.HiveOnline {
		t.Fatalf("hive-2 while hive-1 is partitioned: %+v, %v; want online", hv, err)
	}

	before := accepted(t, h, ws)
	const n = 6
	for i := range n {
		_, rt := suite.Infer(t, q, &hist, inferReq(suite.TinyModel))
		if rt.WorkerID != w2.WorkerID {
			t.Fatalf("job %d with hive-1 partitioned went to %+v; want %s on hive-2", i, rt, w2.WorkerID)
		}
	}
	pinned := inferReq(suite.TinyModel)
	pinned.HiveID = "hive-1"
	suite.MustError(t, suite.Try(t, opTimeout, q, &hist, pinned), "no ready worker for model "+suite.TinyModel+" on hive hive-1")
	after := accepted(t, h, ws)
	if after["hive-1"] != before["hive-1"] || after["hive-2"] != before["hive-2"]+n {
		t.Fatalf("workers accepted %v before and %v after %d jobs; want hive-1 unchanged and hive-2 +%d", before, after, n, n)
	}

	select {
	case f := <-long:
		out := f.Out
		if out.Terminator() != api.TermDone {
			t.Fatalf("the long job on hive-2 ended %s while hive-1 was partitioned; want %s", out.Terminator(), api.TermDone)
		}
	case <-ctx.Done():
		t.Fatal("the long job on hive-2 never ended")
	}

	h.MustRecoverAll(t)
	awaitHive(t, q, "hive-1", api.HiveOnline)
	if err := suite.AwaitIdle(ctx, q, []string{w1.WorkerID, w2.WorkerID}, stateTimeout); err != nil {
		t.Fatal(err)
	}
	served := map[string]int{}
	for range 4 {
		if err := suite.AwaitIdle(ctx, q, []string{w1.WorkerID, w2.WorkerID}, stateTimeout); err != nil {
			t.Fatal(err)
		}
		_, rt := suite.Infer(t, q, &hist, inferReq(suite.TinyModel))
		served[rt.Hive]++
	}
	if served["hive-1"] != 2 || served["hive-2"] != 2 {
		t.Fatalf("after the heal, jobs per hive %v; want 2 each (alternating)", served)
	}
	suite.NothingLost(t, 60*time.Second, q, &hist)
}

// hive-1's machine crashes (container killed) and comes back: while it is
// down its worker is stale and hive-2 serves everything; after the restart
// its daemon (autostarted) heartbeats again, the dead worker stays stale and
// is never scheduled, a new worker on hive-1 serves, and load alternates
// over both hives again.
func TestHiveCrashRecoveryWithTwoHives(t *testing.T) {
	t.Parallel()
	var hist checks.History
	h, q, ws := startTwoHives(t, &hist)
	w1, w2 := ws["hive-1"], ws["hive-2"]
	ctx := suite.Context(t, 4*time.Minute)

	h.MustKill(t, "hive-1")
	awaitHive(t, q, "hive-1", api.HiveOffline)
	awaitWorker(t, q, w1.WorkerID, "stale after the crash", checks.Stale)
	for i := range 4 {
		if _, rt := suite.Infer(t, q, &hist, inferReq(suite.TinyModel)); rt.WorkerID != w2.WorkerID {
			t.Fatalf("job %d with hive-1 down ran on %+v; want %s", i, rt, w2.WorkerID)
		}
	}

	h.MustStartService(t, "hive-1")
	h.MustWaitForHealthy(t, "hive-1", 60*time.Second)
	awaitHive(t, q, "hive-1", api.HiveOnline)
	// The machine's disk survived: its catalog still has the model.
	nw := suite.SpawnWorker(t, q, &hist, "hive-1", suite.TinyModel)
	if nw.WorkerID == w1.WorkerID {
		t.Fatalf("the new worker on hive-1 reuses the dead one's id %s", w1.WorkerID)
	}
	if old, ok, err := checks.Worker(ctx, q, w1.WorkerID); err != nil || (ok && !old.Stale) {
		t.Fatalf("the crashed worker %s after the restart: listed %v, %+v, %v; want stale or gone", w1.WorkerID, ok, old, err)
	}
	served := map[string]int{}
	for i := range 4 {
		if err := suite.AwaitIdle(ctx, q, []string{nw.WorkerID, w2.WorkerID}, stateTimeout); err != nil {
			t.Fatal(err)
		}
		_, rt := suite.Infer(t, q, &hist, inferReq(suite.TinyModel))
		if rt.WorkerID == w1.WorkerID {
			t.Fatalf("job %d after the recovery went to the crashed worker %s", i, w1.WorkerID)
		}
		served[rt.WorkerID]++
	}
	if served[nw.WorkerID] != 2 || served[w2.WorkerID] != 2 {
		t.Fatalf("after the recovery, jobs per worker %v; want 2 on %s (hive-1) and 2 on %s (hive-2)", served, nw.WorkerID, w2.WorkerID)
	}
	if got := suite.WorkerInferences(t, h, "hive-1", nw.WorkerID); got != 2 {
		t.Errorf("new worker %s on hive-1 accepted %d inferences; want 2", nw.WorkerID, got)
	}
	suite.NothingLost(t, 60*time.Second, q, &hist)
}

// Concurrent operations across both hives: infer jobs pinned to each hive,
// model_list and worker_process_list on each, all at once. Every job ends
// [DONE], each forwarded answer is that hive's own (its worker and its
// catalog, not the other's), each worker accepted exactly the jobs pinned to it, and nothing
// is lost.
func TestConcurrentOperationsAcrossHives(t *testing.T) {
	t.Parallel()
	var hist checks.History
	h, q, ws := startTwoHives(t, &hist)
	// A second model on hive-2 only, so the two catalogs differ.
	suite.SeedModel(t, h, q, "hive-2", suite.Ngram4Model)
	catalog := map[string][]string{"hive-1": {suite.TinyModel}, "hive-2": {suite.Ngram4Model, suite.TinyModel}}
	before := accepted(t, h, ws)

	type job struct {
		hive string
		req  api.JobRequest
	}
	var jobs []job
	const perHive = 4
	for _, hv := range []string{"hive-1", "hive-2"} {
		for range perHive {
			r := inferReq(suite.TinyModel)
			r.HiveID = hv
			jobs = append(jobs, job{hv, r})
		}
		jobs = append(jobs,
			job{hv, api.JobRequest{Operation: api.OpModelList, HiveID: hv}},
			job{hv, api.JobRequest{Operation: api.OpWorkerProcessList, HiveID: hv}},
			job{hv, api.JobRequest{Operation: api.OpWorkerProcessList, HiveID: hv}})
	}
	outs := make([]client.Outcome, len(jobs))
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
			defer cancel()
			outs[i], errs[i] = checks.EndedDone(hist.Run(ctx, q, j.req))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent jobs across hives: %v", err)
	}
	for i, j := range jobs {
		o := outs[i]
		switch j.req.Operation {
		case api.OpInfer:
			rt, err := checks.RoutedTo(o)
			if err != nil {
				t.Fatal(err)
			}
			if rt.WorkerID != ws[j.hive].WorkerID {
				t.Errorf("infer pinned to %s ran on %+v; want %s", j.hive, rt, ws[j.hive].WorkerID)
			}
		case api.OpWorkerProcessList:
			l, err := checks.Result[api.WorkerList](o)
			if err != nil {
				t.Fatal(err)
			}
			if len(l.Workers) != 1 || l.Workers[0].WorkerID != ws[j.hive].WorkerID {
				t.Errorf("worker_process_list on %s answered %+v; want only its worker %s", j.hive, l.Workers, ws[j.hive].WorkerID)
			}
		case api.OpModelList:
			l, err := checks.Result[api.ModelList](o)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, m := range l.Models {
				ids = append(ids, m.ID)
			}
			if !slices.Equal(ids, catalog[j.hive]) {
				t.Errorf("model_list on %s answered %v; want its own catalog %v", j.hive, ids, catalog[j.hive])
			}
		}
	}
	after := accepted(t, h, ws)
	for hv := range ws {
		if after[hv]-before[hv] != perHive {
			t.Errorf("worker on %s accepted %d inferences during the burst; want the %d pinned to it", hv, after[hv]-before[hv], perHive)
		}
	}
	suite.NothingLost(t, 60*time.Second, q, &hist)
}

// Heartbeat timing of the full-stack and multi-hive topologies: hives and
// workers beat every 500 ms (the compose default), and stale_after is 3 s
// in their queen.toml.
const (
	beat       = 500 * time.Millisecond
	staleAfter = 3 * time.Second
	// comebackBound bounds how long a hive or worker takes to re-register
	// once the queen can be reached again: two intervals, plus slack for a
	// container stalled on the shared two-core machine.
	comebackBound = 2*beat + 10*time.Second
)

// awaitHeartbeating checks that recovery is real, not one late heartbeat:
// the hive's and the worker's last_seen each take at least four new values,
// over more than stale_after plus an interval, and the hive is online and the
// worker fresh in every read meanwhile.
func awaitHeartbeating(t *testing.T, q *client.Client, alias, workerID string) {
	t.Helper()
	var hiveSeen, workerSeen []time.Time
	grow := func(seq *[]time.Time, ts time.Time) {
		if n := len(*seq); n == 0 || ts.After((*seq)[n-1]) {
			*seq = append(*seq, ts)
		}
	}
	t0 := time.Now()
	err := checks.Await(t.Context(), staleAfter+beat+comebackBound, alias+" heartbeating steadily", func(ctx context.Context) (bool, string, error) {
		hv, err := checks.Hive(ctx, q, alias)
		if err != nil {
			return false, "", err
		}
		w, ok, err := checks.Worker(ctx, q, workerID)
		if err != nil {
			return false, "", err
		}
		if hv.State != api.HiveOnline || hv.LastSeen == nil || !ok || w.Stale {
			return false, "", fmt.Errorf("%v into the recovery: %s is %s, worker %s listed %v stale %v; want online and fresh throughout", time.Since(t0).Round(time.Millisecond), alias, hv.State, workerID, ok, w.Stale)
		}
		grow(&hiveSeen, *hv.LastSeen)
		grow(&workerSeen, w.LastSeen)
		done := time.Since(t0) > staleAfter+beat && len(hiveSeen) >= 5 && len(workerSeen) >= 5
		return done, fmt.Sprintf("%s last_seen advanced %d times, worker %d times", alias, len(hiveSeen)-1, len(workerSeen)-1), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
