//go:build docker

package httpcomm

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// A queen with [jobs] max_jobs = 20 keeps at most 20 jobs, however small:
// after 60 status jobs run one after the other, the oldest answer
// GET /v1/jobs/{id} 404 not_found and the newest are still there,
// completed (the negative control: pruning drops the oldest finished jobs,
// not every job). Between 10 and 20 of the 60 must be found.
func TestFinishedJobsBoundedByMaxJobs(t *testing.T) {
	t.Parallel()
	const maxJobs, n = 20, 60
	toml := queenToml(t, "localhost", "max_jobs  = 10000", "max_jobs  = 20")
	h := integration.Start(t, integration.Localhost, integration.WithFile("queen", "/etc/rbee/queen.toml", toml))
	ctx := suite.Context(t, 3*time.Minute)
	q := h.MustQueen(t)

	// Not through a History: max_jobs prunes the oldest of these jobs,
	// which CheckNothingLost would report lost; their absence is what the
	// test checks.
	var ids []string
	for i := range n {
		out, err := q.Run(ctx, api.JobRequest{Operation: api.OpStatus}, nil)
		if err != nil {
			t.Fatalf("status job %d: %v", i, err)
		}
		suite.MustDone(t, out)
		ids = append(ids, out.JobID)
	}
	found := 0
	for i, id := range ids {
		st, err := q.Job(ctx, id)
		var ae *client.APIError
		switch {
		case err == nil:
			if st.State != api.StateCompleted {
				t.Errorf("job %d (%s): state %s; want completed", i, id, st.State)
			}
			found++
		case errors.As(err, &ae) && ae.Status == http.StatusNotFound && ae.Code == api.CodeNotFound:
			if i >= n-maxJobs/2 {
				t.Errorf("job %d of %d (%s) is gone; want the newest %d kept", i, n, id, maxJobs/2)
			}
		default:
			t.Fatalf("GET /v1/jobs/%s: %v; want 200 or 404 not_found", id, err)
		}
	}
	if _, err := q.Job(ctx, ids[0]); err == nil {
		t.Errorf("the first of %d jobs (%s) is still kept with max_jobs = %d", n, ids[0], maxJobs)
	}
	if found > maxJobs || found < maxJobs/2 {
		t.Errorf("%d of %d finished jobs kept with max_jobs = %d; want %d..%d", found, n, maxJobs, maxJobs/2, maxJobs)
	}
	t.Logf("%d of %d status jobs kept with max_jobs = %d", found, n, maxJobs)
}
