//go:build docker

package httpcomm

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// cancelWait is how long a DELETE of a job waits for its work to stop
// before answering 202 (the job engine's CancelWait, the same on queen and
// hive).
const cancelWait = 10 * time.Second

// DELETE of a queen job that is forwarded to a hive cancels the hive's job:
// the hive's own GET /v1/jobs/{id} ends cancelled soon after the queen's
// job did, and the download behind it did not finish (the model is not in
// the hive's catalog, its partial file is short of the model's size).
func TestCancelForwardedJobCancelsHiveJob(t *testing.T) {
	t.Parallel()
	h, q := suite.StartHive(t)
	ctx := suite.Context(t, 5*time.Minute)
	hive, err := h.Hive(relayHive)
	if err != nil {
		t.Fatal(err)
	}
	// 1 mbit/s makes the 8 MiB download take about 67 s, and the cancel
	// comes at its first progress event, with the download under way: a
	// download that was not cancelled still runs for a minute, well past
	// the deadline below.
	h.MustInject(t, integration.RateLimit("hub", "1mbit"))

	var hist checks.History
	w := newForwardWatch()
	acc, done := suite.Submit(ctx, t, q, &hist, api.JobRequest{Operation: api.OpModelDownload, HiveID: relayHive, Model: suite.BigModel}, w.event)
	hiveJob := awaitProgress(t, ctx, w, done, followed)

	// The window: the hive's job runs when the queen's is cancelled.
	st, err := hive.Job(ctx, hiveJob)
	if err != nil {
		t.Fatalf("hive GET /v1/jobs/%s: %v", hiveJob, err)
	}
	if st.Operation != api.OpModelDownload || st.State != api.StateRunning {
		t.Fatalf("hive job %s is %s %s before the cancel; the test needs a running model_download", hiveJob, st.Operation, st.State)
	}
	ans, err := q.Cancel(ctx, acc.JobID)
	if err != nil {
		t.Fatalf("DELETE /v1/jobs/%s at the queen: %v", acc.JobID, err)
	}
	cancelled := time.Now()
	if ans.State != api.StateCancelled {
		t.Fatalf("DELETE at the queen answered %+v; want cancelled", ans)
	}
	r := <-done
	if r.Err != nil || r.Out.Kind != sse.Cancelled {
		t.Fatalf("queen stream ended %s, %v; want %s", r.Out.Terminator(), r.Err, api.TermCancelled)
	}

	// At the hive: its job ends cancelled. The queen's DELETE to the hive
	// has at most the [http] timeout, and the hive's DELETE waits at most
	// cancelWait for the download to stop; twice that is the deadline, far
	// short of the minute a download that runs on would still take.
	deadline := 2 * (httpTimeout + cancelWait)
	// A job that never finishes is reported below by its state, not as a
	// timeout: that it stays running is the finding.
	awaitErr := checks.Await(ctx, deadline, "hive job "+hiveJob+" finished", func(ctx context.Context) (bool, string, error) {
		st, err = hive.Job(ctx, hiveJob)
		if err != nil {
			return false, "", err
		}
		return st.State.Finished(), "state " + string(st.State), nil
	})
	if st.State != api.StateCancelled {
		t.Fatalf("hive job %s is %s %s after the queen's job was cancelled; want cancelled (the queen did not cancel it on the hive) [%v]",
			hiveJob, st.State, time.Since(cancelled).Round(time.Millisecond), awaitErr)
	}

	// The control: the download stopped short. The model is not in the
	// hive's catalog and its partial file is short of 8 MiB.
	ml, err := checks.EndedDone(hive.Run(ctx, api.JobRequest{Operation: api.OpModelList}, nil))
	if err != nil {
		t.Fatalf("hive model_list: %v", err)
	}
	models, err := checks.Result[api.ModelList](ml)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range models.Models {
		if m.ID == suite.BigModel {
			t.Fatalf("%s is in the hive's catalog after its download was cancelled: %+v", suite.BigModel, m)
		}
	}
	partial := "/home/rbee/.local/share/rbee/models/rbee--big-ngram--model.bin/model.bin.partial"
	out := suite.Sh(t, h, relayHive, "stat -c %s "+partial)
	size, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil || size <= 0 || size >= 8<<20 {
		t.Fatalf("%s on the hive: %q (%v); want a partial file short of %d bytes", partial, out, err, 8<<20)
	}
	t.Logf("queen job %s cancelled; hive job %s %s %s later with %s of %s downloaded",
		acc.JobID, hiveJob, st.State, time.Since(cancelled).Round(time.Millisecond), fmt.Sprintf("%d bytes", size), suite.BigModel)
	suite.NothingLost(t, time.Minute, q, &hist)
}
