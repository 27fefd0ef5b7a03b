//go:build docker

package security

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// workerURL is how the rogue reaches the standalone worker-1.
const workerURL = "http://worker-1:9100"

// TestWorkerBearerToken: worker-1 (standalone, started with the cluster
// secret) runs an inference sent to it directly with its own bearer token
// (200, a job id) and refuses one with no token, with "Bearer wrong" and
// with the token of another hive's workers (401, no job); a wrong token
// neither reads nor cancels the accepted job.
func TestWorkerBearerToken(t *testing.T) {
	t.Parallel()
	e := start(t).withRogue(t, "rogue-token")
	// Long enough (1000 tokens, 5 ms apart at the worker's default token
	// delay) to be still running when the refused reads and cancels arrive.
	body := mustJSON(t, api.InferenceRequest{Prompt: "Alice", MaxTokens: 1000})
	withAuth := func(v string) http.Header {
		h := unsigned()
		if v != "" {
			h.Set("Authorization", v)
		}
		return h
	}
	right := bearer(t, e.h.ClusterKeyFile(), "standalone")

	// The right token first, so the refusals below are not an artefact of
	// the request: the same request with its token runs.
	a := e.post(t, workerURL+"/v1/inference", withAuth(right), body)
	var acc api.JobAccepted
	if a.Status != http.StatusOK || json.Unmarshal([]byte(a.Body), &acc) != nil || acc.JobID == "" {
		t.Fatalf("worker-1 inference with its own token: HTTP %d %s; want 200 with a job id", a.Status, strings.TrimSpace(a.Body))
	}
	t.Logf("worker-1 inference with its own token: HTTP %d, job %s", a.Status, acc.JobID)

	for _, tc := range []struct {
		what, auth, says string
	}{
		{"no token", "", "missing Authorization"},
		{"Bearer wrong", "Bearer wrong", "invalid bearer token"},
		{"hive-1's worker token", bearer(t, e.h.ClusterKeyFile(), "hive-1"), "invalid bearer token"},
	} {
		a := e.post(t, workerURL+"/v1/inference", withAuth(tc.auth), body)
		mustRefuse(t, "worker-1 inference, "+tc.what, a, http.StatusUnauthorized, tc.says)
		if strings.Contains(a.Body, "job_id") {
			t.Fatalf("worker-1 inference, %s: the refusal carries a job: %s", tc.what, a.Body)
		}
		for _, m := range []string{http.MethodGet, http.MethodDelete} {
			mustRefuse(t, m+" worker-1 job, "+tc.what, e.rogue.MustSend(t, m, workerURL+"/v1/inference/"+acc.JobID, withAuth(tc.auth), nil),
				http.StatusUnauthorized, tc.says)
		}
	}

	// At the worker, the accepted job ran to its end: no refused DELETE
	// cancelled it. Its state is read while it runs, to show the refusals
	// above met a running job.
	opt, err := client.WithWorkerTokenFrom(e.h.ClusterKeyFile(), "standalone")
	if err != nil {
		t.Fatal(err)
	}
	wc := client.New(e.h.MustURL(t, "worker-1", 9100), opt)
	var st api.JobStatus
	ctx := suite.Context(t, 2*time.Minute)
	if err := wc.Do(ctx, http.MethodGet, "/v1/inference/"+acc.JobID, nil, &st); err != nil {
		t.Fatal(err)
	}
	t.Logf("worker-1 job %s after the refusals: %s", acc.JobID, st.State)
	if err := checks.Await(ctx, time.Minute, "worker-1 job "+acc.JobID+" finished", func(ctx context.Context) (bool, string, error) {
		if err := wc.Do(ctx, http.MethodGet, "/v1/inference/"+acc.JobID, nil, &st); err != nil {
			return false, "", err
		}
		return st.State.Finished(), "state " + string(st.State), nil
	}); err != nil {
		t.Fatal(err)
	}
	if st.State != api.StateCompleted {
		t.Fatalf("worker-1 job %s ended %s (%s); want completed, untouched by the refused requests", acc.JobID, st.State, st.Error)
	}
	e.mustRogueUntouched(t)
}

// bearer is the Authorization header the client sends to the workers of
// hiveID (the token derived from the cluster secret in keyFile).
func bearer(t *testing.T, keyFile, hiveID string) string {
	t.Helper()
	opt, err := client.WithWorkerTokenFrom(keyFile, hiveID)
	if err != nil {
		t.Fatal(err)
	}
	c := &capture{}
	cl := client.New("http://token.invalid", client.WithHTTPClient(&http.Client{Transport: c}), opt)
	if err := cl.Do(t.Context(), http.MethodGet, "/health", nil, nil); err != nil {
		t.Fatal(err)
	}
	got := c.header.Get("Authorization")
	if !strings.HasPrefix(got, "Bearer ") || len(got) == len("Bearer ") {
		t.Fatalf("client sent Authorization %q; want a bearer token", got)
	}
	return got
}
