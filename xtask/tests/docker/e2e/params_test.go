//go:build docker

package e2e

import (
	"fmt"
	"regexp"
	"testing"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// The temperature and seed of an infer reach the worker as asked, checked
// at the worker: its log records each inference it accepted with its
// temperature and seed, and the tokens behave accordingly. Temperature 0
// (greedy) gives the same tokens whatever the seed; the negative control,
// temperature 1.5, gives different tokens for different seeds, so a
// temperature replaced by the default on the way would be seen twice over.
func TestInferTemperatureReachesWorker(t *testing.T) {
	t.Parallel()
	const hv = "hive-localhost"
	h := integration.Start(t, integration.Localhost)
	q := h.MustQueen(t)
	awaitOnline(t, q, hv)
	suite.SeedModel(t, h, q, hv, suite.TinyModel)
	var hist checks.History
	w := suite.SpawnWorker(t, q, &hist, hv, suite.TinyModel)

	const maxTokens = 64
	infer := func(temp float64, seed uint64) string {
		t.Helper()
		out, _ := suite.Infer(t, q, &hist, api.JobRequest{Model: suite.TinyModel, Prompt: "Alice was beginning", MaxTokens: maxTokens, Temperature: &temp, Seed: &seed})
		text, err := client.Tokens(out)
		if err != nil {
			t.Fatal(err)
		}
		// The worker's own record of what it was asked (internal/worker
		// logs "accepted max_tokens=N temperature=T seed=S").
		line := fmt.Sprintf(`inference [^ ]*: accepted max_tokens=%d temperature=%s seed=%d `, maxTokens, regexp.QuoteMeta(fmt.Sprint(temp)), seed)
		r := h.MustExec(t, hv, []string{"grep", "-c", line, suite.HiveDataDir + "/logs/" + w.WorkerID + ".log"}, integration.AsUser("rbee"))
		if r.ExitCode != 0 {
			got := h.MustExec(t, hv, []string{"grep", "accepted", suite.HiveDataDir + "/logs/" + w.WorkerID + ".log"}, integration.AsUser("rbee"))
			t.Fatalf("worker %s has no record of an inference with temperature %g and seed %d; it accepted:\n%s", w.WorkerID, temp, seed, got.Stdout)
		}
		return text
	}

	// Negative control: sampling, two seeds, two different outputs.
	hot1, hot2 := infer(1.5, 1), infer(1.5, 2)
	if hot1 == hot2 {
		t.Fatalf("temperature 1.5 with seeds 1 and 2 gave the same %d tokens %q; the seed does not reach the sampler", maxTokens, hot1)
	}
	cold1, cold2 := infer(0, 1), infer(0, 2)
	if cold1 != cold2 {
		t.Fatalf("temperature 0 with seeds 1 and 2 gave different tokens:\n  %q\n  %q\nwant the same greedy output: the temperature did not reach the worker", cold1, cold2)
	}
	t.Logf("temperature 1.5: %q / %q; temperature 0: %q", hot1, hot2, cold1)
	suite.NothingLost(t, opTimeout, q, &hist)
}
