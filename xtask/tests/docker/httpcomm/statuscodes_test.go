//go:build docker

package httpcomm

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// wantAPIError checks that err is an HTTP error answer with status and code
// whose message names every one of parts.
func wantAPIError(t *testing.T, what string, err error, status int, code string, parts ...string) {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) {
		t.Errorf("%s: %v; want HTTP %d %s", what, err, status, code)
		return
	}
	if ae.Status != status || ae.Code != code {
		t.Errorf("%s: HTTP %d %s (%q); want HTTP %d %s", what, ae.Status, ae.Code, ae.Message, status, code)
	}
	for _, p := range parts {
		if !strings.Contains(ae.Message, p) {
			t.Errorf("%s: message %q does not name %q", what, ae.Message, p)
		}
	}
}

// The job API answers with the status codes docs/PROTOCOL.md gives, on the
// queen and on the hive: a request that names an unknown hive or device is
// 400 invalid_request naming it (a valid one is accepted), and DELETE of a
// finished job is 409 conflict while its record stays completed.
func TestJobAPIStatusCodes(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.Localhost)
	ctx := suite.Context(t, 2*time.Minute)
	q := h.MustQueen(t)
	hive, err := h.Hive(localHive)
	if err != nil {
		t.Fatal(err)
	}

	// 400 on the queen, before a job exists.
	var hist checks.History
	_, err = hist.Submit(ctx, q, api.JobRequest{Operation: api.OpHiveGet, Alias: "no-such-hive"})
	wantAPIError(t, "queen: hive_get of an unknown alias", err, http.StatusBadRequest, api.CodeInvalidRequest, "no-such-hive")
	_, err = hist.Submit(ctx, q, api.JobRequest{Operation: api.OpWorkerSpawn, HiveID: localHive, Model: suite.TinyModel, Device: "tpu:0"})
	wantAPIError(t, "queen: worker_spawn on device tpu:0", err, http.StatusBadRequest, api.CodeInvalidRequest, "tpu:0")
	// 400 on the hive: a device of the right form that it does not have.
	_, err = hive.Submit(ctx, api.JobRequest{Operation: api.OpWorkerSpawn, Model: suite.TinyModel, Device: "gpu:7"})
	wantAPIError(t, "hive: worker_spawn on gpu:7", err, http.StatusBadRequest, api.CodeInvalidRequest, "gpu:7")

	// Accepted (the negative control of the 400s), run to the end, then
	// DELETE: 409 on both servers, and the job is still completed. Both
	// servers' jobs are run alike with their own clients (the queen's
	// History cannot re-read a hive's job).
	for _, srv := range []struct {
		name string
		c    *client.Client
		req  api.JobRequest
	}{
		{"queen", q, api.JobRequest{Operation: api.OpHiveGet, Alias: localHive}},
		{"hive", hive, api.JobRequest{Operation: api.OpWorkerProcessList}},
	} {
		out, err := srv.c.Run(ctx, srv.req, nil)
		if err != nil {
			t.Fatalf("%s: %s: %v", srv.name, srv.req.Operation, err)
		}
		suite.MustDone(t, out)
		_, err = srv.c.Cancel(ctx, out.JobID)
		wantAPIError(t, srv.name+": DELETE of finished job "+out.JobID, err, http.StatusConflict, api.CodeConflict, out.JobID)
		if st, err := srv.c.Job(ctx, out.JobID); err != nil || st.State != api.StateCompleted {
			t.Errorf("%s: job %s after the refused DELETE: %+v, %v; want completed", srv.name, out.JobID, st, err)
		}
		_, err = srv.c.Cancel(ctx, "job-00000000-0000-0000-0000-000000000000")
		wantAPIError(t, srv.name+": DELETE of an unknown job", err, http.StatusNotFound, api.CodeNotFound)
	}
}
