//go:build docker

package httpcomm

import (
	"slices"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// Forwarding goes to the hive a job names: with different catalogs on
// hive-1 and hive-2, model_list on each answers that hive's own catalog and
// its narration names that hive; with the queen's connections to hive-2
// refused, a job for hive-2 ends [ERROR] naming hive-2 and its URL while the
// same job for hive-1 still ends [DONE].
func TestForwardingToNamedHive(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.MultiHive)
	ctx := suite.Context(t, 2*time.Minute)
	q := h.MustQueen(t)
	for _, hv := range []string{"hive-1", "hive-2"} {
		if err := checks.AwaitHiveState(ctx, q, hv, api.HiveOnline, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	suite.SeedModel(t, h, q, "hive-1", suite.TinyModel)
	suite.SeedModel(t, h, q, "hive-2", "rbee/ngram-4:model.bin")
	want := map[string][]string{"hive-1": {suite.TinyModel}, "hive-2": {"rbee/ngram-4:model.bin"}}

	var hist checks.History
	// Interleaved, so a queen that reused the previous job's hive fails too.
	for _, hv := range []string{"hive-2", "hive-1", "hive-2", "hive-1"} {
		out := suite.Run(t, time.Minute, q, &hist, api.JobRequest{Operation: api.OpModelList, HiveID: hv})
		l, err := checks.Result[api.ModelList](out)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range l.Models {
			ids = append(ids, m.ID)
		}
		if !slices.Equal(ids, want[hv]) {
			t.Fatalf("model_list for %s answered %v; want %s's catalog %v", hv, ids, hv, want[hv])
		}
		for _, n := range suite.Narrations(t, out) {
			if n.Actor != "queen" && n.Hive != hv {
				t.Errorf("model_list for %s: relayed narration %+v names hive %q", hv, n, n.Hive)
			}
		}
	}

	h.MustInject(t, integration.Reject("queen", "hive-2"))
	suite.MustError(t, suite.Try(t, time.Minute, q, &hist, api.JobRequest{Operation: api.OpModelList, HiveID: "hive-2"}), "hive-2 (http://hive-2:9000)")
	suite.Run(t, time.Minute, q, &hist, api.JobRequest{Operation: api.OpModelList, HiveID: "hive-1"})
	suite.NothingLost(t, time.Minute, q, &hist)
}
