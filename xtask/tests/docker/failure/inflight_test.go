//go:build docker

package failure

import (
	"context"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// A job in flight when the queen is restarted (PROTOCOL: on SIGTERM a
// program ends running jobs with [CANCELLED] and exits 0 within 10 s; its
// jobs live in its memory): the client following it gets exactly one
// terminator, [CANCELLED], before the queen is gone; the queen exits 0;
// the worker's generation is cancelled too, not left running; the new
// queen answers GET /v1/jobs/{id} and the stream with a 404 naming the
// job, at once, instead of hanging.
func TestJobInFlightAcrossQueenRestart(t *testing.T) {
	t.Parallel()
	// 100 ms per token: 300 tokens take 30 s, far longer than the restart.
	h, q, wc := suite.StartWorker(t, 100*time.Millisecond)
	ctx := suite.Context(t, 4*time.Minute)
	const maxTokens = 300
	seed := uint64(9)
	started := make(chan struct{})
	tokens := 0
	// The job's own History: the restarted queen has forgotten it (its jobs
	// live in memory), so CheckNothingLost could not re-read it; the test
	// checks its single terminator itself.
	var hist checks.History
	acc, done := suite.Submit(ctx, t, q, &hist, api.JobRequest{Operation: api.OpInfer, Model: suite.TinyModel, Prompt: "Alice", MaxTokens: maxTokens, Seed: &seed}, func(ev sse.Event) error {
		if ev.Name == api.EventToken {
			if tokens++; tokens == 5 {
				close(started)
			}
		}
		return nil
	})
	select {
	case <-started:
	case r := <-done:
		t.Fatalf("infer ended %s (%v) before 5 tokens", r.Out.Terminator(), r.Err)
	case <-ctx.Done():
		t.Fatal("no 5 tokens")
	}
	wjob := suite.WorkerJobOf(t, h, "worker-1", maxTokens)
	if st, err := q.Job(ctx, acc.JobID); err != nil || st.State != api.StateRunning {
		t.Fatalf("job %s before the restart: %+v, %v; want running", acc.JobID, st, err)
	}

	t0 := time.Now()
	h.MustSignal(t, "queen", syscall.SIGTERM)
	code := h.MustWaitForExit(t, "queen", 60*time.Second)
	took := time.Since(t0)
	var r suite.Followed
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the client's stream did not end after the queen exited")
	}
	if r.Err != nil || r.Out.Kind != sse.Cancelled {
		t.Fatalf("client: ended %s, %v; want [CANCELLED] delivered before the queen exited", r.Out.Terminator(), r.Err)
	}
	if code != 0 {
		t.Errorf("queen exited %d after SIGTERM; want 0", code)
	}
	// 10 s is the protocol's bound; the rest is Docker's signal and
	// inspect round trips on a loaded machine.
	if took > 10*time.Second+10*time.Second {
		t.Errorf("queen took %v to exit after SIGTERM; want within 10 s (+ harness slack)", took)
	}
	t.Logf("queen exited %d %v after SIGTERM; the client got %s after %d tokens", code, took.Round(time.Millisecond), r.Out.Terminator(), tokens)

	// The worker's generation was cancelled by the queen on its way out.
	var wst api.JobStatus
	if err := checks.Await(ctx, 30*time.Second, "worker job "+wjob+" cancelled", func(ctx context.Context) (bool, string, error) {
		if err := wc.Do(ctx, http.MethodGet, "/v1/inference/"+wjob, nil, &wst); err != nil {
			return false, "", err
		}
		return wst.State == api.StateCancelled, "state " + string(wst.State), nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, n, end, err := suite.WorkerJobEnd(ctx, wc, wjob); err != nil || end.StopReason != "cancelled" || n >= maxTokens {
		t.Fatalf("worker job %s: %d tokens, end %+v, %v; want cancelled before %d", wjob, n, end, err, maxTokens)
	}

	// The new queen does not know the job, and says so at once.
	h.MustStartService(t, "queen")
	h.MustWaitForHealthy(t, "queen", 60*time.Second)
	q = h.MustQueen(t) // the published port changed
	qctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, err := q.Job(qctx, acc.JobID)
	if !client.IsStatus(err, http.StatusNotFound) || !strings.Contains(err.Error(), acc.JobID) {
		t.Fatalf("new queen GET /v1/jobs/%s: %v; want 404 naming the job", acc.JobID, err)
	}
	// Raw access: this follow must fail with a 404, which is what it
	// checks; there is no job to record.
	if _, err := q.Follow(qctx, acc.JobID, 0, nil); !client.IsStatus(err, http.StatusNotFound) {
		t.Fatalf("new queen stream of %s: %v; want 404, not a hang or a stream", acc.JobID, err)
	}
}
