//go:build docker

package workerlifecycle

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// DELETE of an infer job at the queen reaches the worker: the worker's own
// job turns cancelled, its generation stops (its token count stays where
// it was while another job on the same worker keeps generating) and it
// reports stop_reason "cancelled"; the queen's stream ends [CANCELLED].
// Negative control: the unrelated job on the same worker runs to the end.
func TestCancelInferReachesWorker(t *testing.T) {
	t.Parallel()
	// 100 ms per token: 300 tokens take 30 s, room to cancel mid-way.
	h, q, wc := suite.StartWorker(t, 100*time.Millisecond)
	ctx := suite.Context(t, 4*time.Minute)

	// The unrelated job, straight on the worker, followed to its end.
	const controlTokens, cancelTokens = 300, 400
	var control api.JobAccepted
	if err := wc.Do(ctx, http.MethodPost, "/v1/inference", api.InferenceRequest{Prompt: "Alice", MaxTokens: controlTokens, Temperature: 0.9, Seed: 5}, &control); err != nil {
		t.Fatalf("control inference: %v", err)
	}
	var controlSeen atomic.Int64
	controlDone := make(chan error, 1)
	// Raw access: the control job is the worker's own, not a queen job a
	// History could re-read.
	go func() {
		_, err := wc.FollowPath(ctx, control.SSEURL, control.JobID, 0, func(ev sse.Event) error {
			if ev.Name == api.EventToken {
				controlSeen.Add(1)
			}
			return nil
		})
		controlDone <- err
	}()

	seed := uint64(7)
	var seen atomic.Int64
	started := make(chan struct{})
	var hist checks.History
	acc, done := suite.Submit(ctx, t, q, &hist, api.JobRequest{Operation: api.OpInfer, Model: suite.TinyModel, Prompt: "Alice was", MaxTokens: cancelTokens, Seed: &seed}, func(ev sse.Event) error {
		if ev.Name == api.EventToken && seen.Add(1) == 5 {
			close(started)
		}
		return nil
	})
	select {
	case <-started:
	case r := <-done:
		t.Fatalf("infer ended %s (%v) before 5 tokens", r.Out.Terminator(), r.Err)
	case <-ctx.Done():
		t.Fatal("no 5 tokens on the queen's stream")
	}
	wjob := suite.WorkerJobOf(t, h, "worker-1", cancelTokens)

	ans, err := q.Cancel(ctx, acc.JobID)
	if err != nil || ans.State != api.StateCancelled {
		t.Fatalf("DELETE at the queen: %+v, %v; want cancelled", ans, err)
	}
	atCancel := int(seen.Load())
	var cst api.JobStatus
	if err := wc.Do(ctx, http.MethodGet, "/v1/inference/"+control.JobID, nil, &cst); err != nil || cst.State != api.StateRunning {
		t.Fatalf("control job %s is %q (%v) at the cancel; the test needs it running", control.JobID, cst.State, err)
	}
	r := <-done
	if r.Err != nil || r.Out.Kind != sse.Cancelled {
		t.Fatalf("queen stream: ended %s, %v; want [CANCELLED]", r.Out.Terminator(), r.Err)
	}
	if st, err := q.Job(ctx, acc.JobID); err != nil || st.State != api.StateCancelled {
		t.Fatalf("queen GET /v1/jobs/%s: %+v, %v; want cancelled", acc.JobID, st, err)
	}

	// At the worker: its job is cancelled…
	var wst api.JobStatus
	err = checks.Await(ctx, 30*time.Second, "worker job "+wjob+" cancelled", func(ctx context.Context) (bool, string, error) {
		if err := wc.Do(ctx, http.MethodGet, "/v1/inference/"+wjob, nil, &wst); err != nil {
			return false, "", err
		}
		return wst.State == api.StateCancelled, "state " + string(wst.State), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wout, n, end, err := suite.WorkerJobEnd(ctx, wc, wjob)
	if err != nil {
		t.Fatal(err)
	}
	if wout.Kind != sse.Cancelled || end.StopReason != "cancelled" || end.TokensOut != n {
		t.Fatalf("worker job %s: %s, end %+v, %d tokens; want [CANCELLED] after end{stop_reason cancelled, tokens_out %d}", wjob, wout.Terminator(), end, n, n)
	}
	// …having stopped soon after the queen stopped relaying: at least what
	// the client saw, at most 10 s of generation more, never all of it.
	if n < atCancel || n > atCancel+100 || n >= cancelTokens {
		t.Fatalf("worker job %s generated %d tokens; the client saw %d when it cancelled (max_tokens %d)", wjob, n, atCancel, cancelTokens)
	}
	// …and stays stopped while the control job, on the same worker and
	// clock, generates 20 more tokens.
	c0 := controlSeen.Load()
	if err := checks.Await(ctx, 60*time.Second, "20 more control tokens", func(ctx context.Context) (bool, string, error) {
		c := controlSeen.Load()
		return c >= c0+20 || c >= controlTokens, fmt.Sprintf("%d control tokens", c), nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, n2, _, err := suite.WorkerJobEnd(ctx, wc, wjob); err != nil || n2 != n {
		t.Fatalf("cancelled worker job %s: %d tokens, then %d (%v); want no growth", wjob, n, n2, err)
	}

	// Negative control: the unrelated job ran to its end.
	select {
	case err := <-controlDone:
		if err != nil {
			t.Fatalf("control job: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("control job did not finish")
	}
	cout, cn, cend, err := suite.WorkerJobEnd(ctx, wc, control.JobID)
	if err != nil || cout.Kind != sse.Done || cend.StopReason == "cancelled" || cn != cend.TokensOut || cn != controlTokens {
		t.Fatalf("control job %s: %s, end %+v, %d tokens, %v; want [DONE] with all %d tokens", control.JobID, cout.Terminator(), cend, cn, err, controlTokens)
	}
	t.Logf("cancelled after the client saw %d tokens; worker job %s stopped at %d; control job generated %d", atCancel, wjob, n, cn)
	suite.NothingLost(t, time.Minute, q, &hist)
}
