//go:build docker

package failure

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// workerPort is the port the workers serve on inside their containers.
const workerPort = 9100

// acceptedInferences counts, in worker container svc's log, the inferences
// it accepted with maxTokens (every test job has a max_tokens of its own,
// so each is told apart at the worker).
func acceptedInferences(ctx context.Context, h *integration.Harness, svc string, maxTokens int) (int, error) {
	logs, err := h.Logs(ctx, svc)
	if err != nil {
		return 0, fmt.Errorf("logs of %s: %w", svc, err)
	}
	re := regexp.MustCompile(`inference job-\S+: accepted max_tokens=` + strconv.Itoa(maxTokens) + ` `)
	return len(re.FindAllString(logs, -1)), nil
}

// An infer whose POST reached a worker, which accepted it, and whose
// connection then broke before the answer came back is not tried on
// another worker: the generation may be running on the first, so a second
// would run it twice. Counted at the workers: the first accepted it once,
// the other never; the client's job ends [ERROR] naming the first worker
// and saying it may have accepted the request. Negative control: an infer
// before the fault is counted at exactly one of the two workers.
func TestInferNotRetriedAfterWorkerAccepted(t *testing.T) {
	t.Parallel()
	// The queen's [http] timeout must outlast holding the worker's answer
	// and cutting the connection, whatever the load: a minute.
	toml := suite.QueenConfig(t, "full-stack", map[string]string{"http.timeout": `"60s"`})
	h := integration.Start(t, integration.FullStack, integration.WithServices("queen", "worker-1", "worker-2"),
		integration.WithFile("queen", "/etc/rbee/queen.toml", toml))
	ctx := suite.Context(t, 4*time.Minute)
	q := h.MustQueen(t)
	workers := []string{"worker-1", "worker-2"} // standalone: service name = worker id
	if err := suite.AwaitIdle(ctx, q, workers, stateTimeout); err != nil {
		t.Fatal(err)
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
	seed := uint64(3)
	infer := func(maxTokens int) api.JobRequest {
		return api.JobRequest{Operation: api.OpInfer, Model: suite.TinyModel, Prompt: "Alice", MaxTokens: maxTokens, Seed: &seed}
	}

	// Negative control: a normal infer is counted, at one worker.
	const controlTokens = 21
	var hist checks.History
	suite.Run(t, opTimeout, q, &hist, infer(controlTokens))
	if c := count(controlTokens); c["worker-1"]+c["worker-2"] != 1 {
		t.Fatalf("a normal infer of %d tokens was accepted %v times; want once in all", controlTokens, c)
	}

	// Both workers' answers to POST /v1/inference (they carry "sse_url")
	// are held: whichever the queen picks accepts the inference and the
	// queen never hears so.
	releases := map[string]func(context.Context) error{}
	for _, w := range workers {
		rel, err := h.HoldReplies(ctx, w, workerPort, "sse_url")
		if err != nil {
			t.Fatal(err)
		}
		releases[w] = rel
	}
	const maxTokens = 37
	acc, done := suite.Submit(ctx, t, q, &hist, infer(maxTokens), nil)
	var first string
	err := checks.Await(ctx, stateTimeout, "a worker accepted the inference", func(ctx context.Context) (bool, string, error) {
		c := count(maxTokens)
		for _, w := range workers {
			if c[w] > 0 {
				first = w
			}
		}
		if c["worker-1"]+c["worker-2"] > 1 {
			return false, "", fmt.Errorf("accepted %v before any fault: want once", c)
		}
		return first != "", fmt.Sprintf("accepted %v", c), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	other := workers[0]
	if other == first {
		other = workers[1]
	}
	// The other worker answers again, so an infer retried on it would run.
	if err := releases[other](ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := q.Job(ctx, acc.JobID); err != nil || st.State != api.StateRunning {
		t.Fatalf("queen job %s before the cut: %+v, %v; want running (waiting for %s's answer)", acc.JobID, st, err, first)
	}
	cut := h.MustCutConnections(t, "queen", first, workerPort)
	if err := releases[first](ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s accepted the inference; cut %v", first, cut)

	var r suite.Followed
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("the infer's stream did not end after its connection was cut")
	}
	if r.Err != nil {
		t.Fatalf("following the infer: %v", r.Err)
	}
	// The queen's job is over, so no retry can still come: count.
	c := count(maxTokens)
	if c[first] != 1 || c[other] != 0 {
		t.Fatalf("inference of %d tokens accepted %v; want once on %s, never on %s (the queen tried it again after %s had accepted it); the job ended %s",
			maxTokens, c, first, other, first, r.Out.Terminator())
	}
	suite.MustError(t, r.Out, first, "may have been accepted")
	if strings.Contains(r.Out.Error, "connection refused") {
		t.Errorf("error %q says the worker never got the request", r.Out.Error)
	}
	for _, n := range suite.Narrations(t, r.Out) {
		if strings.Contains(n.Message, "trying another worker") {
			t.Errorf("the infer was tried on another worker: %s", n.Message)
		}
	}
	t.Logf("infer %s ended %s; accepted %v", acc.JobID, r.Out.Terminator(), c)
	suite.NothingLost(t, opTimeout, q, &hist)
}
