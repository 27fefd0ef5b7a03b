package checks

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
)

// fakeJob is what the fake queen serves for one job id: the raw stream
// and the status.
type fakeJob struct {
	stream string
	state  api.JobState
}

// fakeQueen serves GET /v1/jobs/{id}/stream and /v1/jobs/{id} from jobs;
// an unknown id is a 404, as the queen answers a job it does not have.
func fakeQueen(t *testing.T, jobs map[string]fakeJob) *client.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, stream := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/v1/jobs/"), "/stream")
		j, ok := jobs[id]
		if !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"error":{"code":"not_found","message":"job %s not found"}}`, id)
			return
		}
		if stream {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, j.stream)
			return
		}
		now := time.Now()
		_ = json.NewEncoder(w).Encode(api.JobStatus{JobID: id, State: j.state, CreatedAt: now, FinishedAt: &now})
	}))
	t.Cleanup(srv.Close)
	return client.New(srv.URL)
}

const (
	doneStream   = "id: 1\nevent: token\ndata: {\"t\":\"a\",\"i\":0}\n\ndata: [DONE]\n\n"
	doubleStream = "id: 1\nevent: token\ndata: {\"t\":\"a\",\"i\":0}\n\ndata: [DONE]\n\ndata: [ERROR] late\n\n"
)

func TestViolations(t *testing.T) {
	q := fakeQueen(t, map[string]fakeJob{
		"job-ok":       {doneStream, api.StateCompleted},
		"job-double":   {doubleStream, api.StateCompleted},
		"job-disagree": {doneStream, api.StateFailed},
	})
	ctx := context.Background()
	var h History
	for _, id := range []string{"job-ok", "job-double", "job-disagree", "job-lost"} {
		_, _ = h.Adopt(ctx, q, api.OpInfer, id, nil)
	}
	h.add(Entry{Op: api.OpInfer, JobID: "job-ok", Accepted: true, Outcome: h.Entries()[0].Outcome})
	// The client saw [DONE], but the server no longer knows the job: lost.
	h.add(Entry{Op: api.OpInfer, JobID: "job-forgotten", Accepted: true, Outcome: h.Entries()[0].Outcome})
	h.add(Entry{Op: api.OpInfer, Err: fmt.Errorf("submit refused")}) // not accepted: not a job of the server
	vs := h.Violations(ctx, q)
	want := map[string]string{
		"job-double":    "2 terminators in stream",
		"job-disagree":  "status says failed but the stream ended [DONE]",
		"job-lost":      "client never saw a terminator",
		"job-ok":        "recorded for two submissions",
		"job-forgotten": "re-reading stream: HTTP 404",
	}
	if len(vs) != len(want) {
		t.Fatalf("%d violations, want %d: %v", len(vs), len(want), vs)
	}
	for _, v := range vs {
		if w, ok := want[v.JobID]; !ok || !strings.Contains(v.What, w) {
			t.Errorf("violation %q for %s; want one saying %q", v.What, v.JobID, w)
		}
	}

	// Negative control: the consistent job alone is no violation.
	var clean History
	if _, err := clean.Adopt(ctx, q, api.OpInfer, "job-ok", nil); err != nil {
		t.Fatal(err)
	}
	if vs := clean.Violations(ctx, q); len(vs) != 0 {
		t.Fatalf("a consistent history has violations: %v", vs)
	}
}
