//go:build docker

package e2e

import (
	"testing"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// An infer runs only on a worker of its model, and with hive_id only on that
// hive, although idle workers of another model or on another hive are
// there to take it: hive-1 has worker A (tiny), hive-2 worker B (tiny) and
// worker C (ngram-4). Negative control: two unpinned tiny infers go one to
// each hive, so the rotation would have spread pinned jobs had the pin been
// ignored. Counted at the workers' own logs, not only the queen's narration.
func TestInferStaysOnItsModelAndHive(t *testing.T) {
	t.Parallel()
	h, q := startMultiHive(t)
	suite.SeedModel(t, h, q, "hive-2", suite.Ngram4Model)
	var hist checks.History
	a := suite.SpawnWorker(t, q, &hist, "hive-1", suite.TinyModel)
	b := suite.SpawnWorker(t, q, &hist, "hive-2", suite.TinyModel)
	c := suite.SpawnWorker(t, q, &hist, "hive-2", suite.Ngram4Model)
	name := map[string]string{a.WorkerID: "A (hive-1, tiny)", b.WorkerID: "B (hive-2, tiny)", c.WorkerID: "C (hive-2, ngram-4)"}
	model := map[string]string{a.WorkerID: suite.TinyModel, b.WorkerID: suite.TinyModel, c.WorkerID: suite.Ngram4Model}
	ids := []string{a.WorkerID, b.WorkerID, c.WorkerID}
	ctx := suite.Context(t, 10*opTimeout)
	served := map[string]int{}
	run := func(req api.JobRequest) string {
		t.Helper()
		// Every worker idle first, so nothing but the model and the pin
		// decides where the job goes.
		if err := suite.AwaitIdle(ctx, q, ids, stateTimeout); err != nil {
			t.Fatal(err)
		}
		_, rt := suite.Infer(t, q, &hist, req)
		if m := model[rt.WorkerID]; m != req.Model {
			t.Fatalf("an infer of model %s ran on %s, a worker of %s", req.Model, name[rt.WorkerID], m)
		}
		served[rt.WorkerID]++
		return rt.WorkerID
	}

	// Negative control: unpinned, the two tiny workers take turns by hive.
	got := map[string]bool{}
	for range 2 {
		got[run(api.JobRequest{Model: suite.TinyModel})] = true
	}
	if !got[a.WorkerID] || !got[b.WorkerID] {
		t.Fatalf("two unpinned tiny infers ran on %v; want one on %s and one on %s", got, name[a.WorkerID], name[b.WorkerID])
	}

	const n = 3
	for _, tc := range []struct {
		req  api.JobRequest
		want api.WorkerProcess
	}{
		{api.JobRequest{Model: suite.TinyModel, HiveID: "hive-1"}, a},
		{api.JobRequest{Model: suite.TinyModel, HiveID: "hive-2"}, b},
		{api.JobRequest{Model: suite.Ngram4Model}, c},
	} {
		for i := range n {
			if w := run(tc.req); w != tc.want.WorkerID {
				t.Errorf("infer %d of model %s on hive %q ran on %s; want %s", i, tc.req.Model, tc.req.HiveID, name[w], name[tc.want.WorkerID])
			}
		}
	}
	// The workers' own count: A and B one control job and n pinned ones
	// each, C only its own model's n.
	want := map[string]int{a.WorkerID: 1 + n, b.WorkerID: 1 + n, c.WorkerID: n}
	for _, w := range []api.WorkerProcess{a, b, c} {
		hv := "hive-1"
		if w.WorkerID != a.WorkerID {
			hv = "hive-2"
		}
		if got := suite.WorkerInferences(t, h, hv, w.WorkerID); got != want[w.WorkerID] || served[w.WorkerID] != want[w.WorkerID] {
			t.Errorf("worker %s accepted %d inferences, the queen routed %d to it; want %d", name[w.WorkerID], got, served[w.WorkerID], want[w.WorkerID])
		}
	}
	suite.NothingLost(t, opTimeout, q, &hist)
}
