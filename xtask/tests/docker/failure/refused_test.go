//go:build docker

package failure

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// An infer whose worker refuses the connection (it never saw the request:
// the worker died since its last heartbeat, or its port is closed) is tried
// on another worker and served there, and no job tries one worker twice.
// worker-1 keeps heartbeating while the queen's connections to it are
// refused, so it stays a fresh candidate the whole time. Counted at the
// workers: worker-1 accepts none of those jobs, worker-2 all. With both
// refused, the job ends [ERROR] after one attempt on each. Negative
// control: before the fault, two sequential infers run one on each worker.
func TestInferRefusedWorkerTriedOnAnother(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.FullStack, integration.WithServices("queen", "worker-1", "worker-2"))
	ctx := suite.Context(t, 5*time.Minute)
	q := h.MustQueen(t)
	workers := []string{"worker-1", "worker-2"} // standalone: service name = worker id
	var hist checks.History
	seed := uint64(9)
	infer := func(maxTokens int) api.JobRequest {
		return api.JobRequest{Operation: api.OpInfer, Model: suite.TinyModel, Prompt: "Alice", MaxTokens: maxTokens, Seed: &seed}
	}
	count := func(maxTokens int) map[string]int {
		t.Helper()
		c := map[string]int{}
		for _, w := range workers {
			n, err := acceptedInferences(ctx, h, w, maxTokens)
			if err != nil {
				t.Fatal(err)
			}
			c[w] = n
		}
		return c
	}
	routes := func(o client.Outcome) []string {
		t.Helper()
		rs, err := checks.Routes(o)
		if err != nil {
			t.Fatal(err)
		}
		ids := make([]string, len(rs))
		for i, r := range rs {
			ids[i] = r.WorkerID
		}
		for i := range ids {
			for j := range i {
				if ids[i] == ids[j] {
					t.Errorf("job %s tried %s twice (attempts %v)", o.JobID, ids[i], ids)
				}
			}
		}
		return ids
	}
	awaitIdle := func() {
		t.Helper()
		if err := suite.AwaitIdle(ctx, q, workers, stateTimeout); err != nil {
			t.Fatal(err)
		}
	}

	// refuse makes the queen's new connections to w refused (RST) and
	// aborts the idle keep-alive connections it already has there: a
	// request on one of those would be sent and then reset, which may have
	// arrived and is rightly not retried (TestInferNotRetriedAfterWorkerAccepted).
	refuse := func(w string) {
		t.Helper()
		h.MustInject(t, integration.Reject("queen", w))
		h.MustCutConnections(t, "queen", w, workerPort)
		if err := checks.Await(ctx, stateTimeout, "no connection from the queen to "+w, func(ctx context.Context) (bool, string, error) {
			cs, err := h.Connections(ctx, "queen", w, workerPort)
			return len(cs) == 0, fmt.Sprintf("%d established: %v", len(cs), cs), err
		}); err != nil {
			t.Fatal(err)
		}
	}

	// Negative control: both workers serve while nothing is refused.
	const controlTokens = 19
	for range 2 {
		awaitIdle()
		suite.Run(t, opTimeout, q, &hist, infer(controlTokens))
	}
	if c := count(controlTokens); c["worker-1"] != 1 || c["worker-2"] != 1 {
		t.Fatalf("two infers before any fault were accepted %v; want once on each worker", c)
	}

	refuse("worker-1")
	const refusedTokens = 23
	const n = 3
	triedFirst := 0
	for i := range n {
		awaitIdle() // worker-1 still heartbeats: fresh, ready, a candidate
		out := suite.Run(t, opTimeout, q, &hist, infer(refusedTokens))
		ids := routes(out)
		if len(ids) == 0 || ids[len(ids)-1] != "worker-2" {
			t.Fatalf("infer %d with worker-1 refused: attempts %v; want it served by worker-2", i, ids)
		}
		if ids[0] == "worker-1" {
			triedFirst++
		}
	}
	// The scheduler rotates over the two idle workers, so worker-1 comes
	// first at least once; otherwise the refusal was never exercised.
	if triedFirst == 0 {
		t.Fatalf("none of %d infers tried worker-1 first: the refused connection was never part of a job", n)
	}
	if c := count(refusedTokens); c["worker-1"] != 0 || c["worker-2"] != n {
		t.Fatalf("%d infers with worker-1 refused were accepted %v; want %d on worker-2, none on worker-1", n, c, n)
	}
	t.Logf("%d infers with worker-1 refused: %d tried it first, all served by worker-2", n, triedFirst)

	refuse("worker-2")
	const allRefusedTokens = 29
	awaitIdle()
	out := suite.Try(t, opTimeout, q, &hist, infer(allRefusedTokens))
	ids := routes(out)
	if strings.Join(ids, ",") != "worker-1,worker-2" && strings.Join(ids, ",") != "worker-2,worker-1" {
		t.Fatalf("infer with both workers refused: attempts %v, ended %s; want each worker tried once", ids, out.Terminator())
	}
	suite.MustError(t, out, "no other ready worker for model "+suite.TinyModel)
	if c := count(allRefusedTokens); c["worker-1"]+c["worker-2"] != 0 {
		t.Errorf("the infer with both workers refused was accepted %v; want nowhere", c)
	}
	t.Logf("both refused: %s after attempts %s", out.Terminator(), fmt.Sprint(ids))
	h.MustRecoverAll(t)
	suite.NothingLost(t, opTimeout, q, &hist)
}
