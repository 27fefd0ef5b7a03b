package nemesis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
)

// queenWith serves the streams and statuses of the jobs in done (each a
// finished job with one [DONE]); any other id is a 404.
func queenWith(t *testing.T, done ...string) *client.Client {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, stream := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/v1/jobs/"), "/stream")
		for _, d := range done {
			if d != id {
				continue
			}
			if stream {
				w.Header().Set("Content-Type", "text/event-stream")
				fmt.Fprint(w, "id: 1\nevent: token\ndata: {\"t\":\"a\",\"i\":0}\n\ndata: [DONE]\n\n")
				return
			}
			now := time.Now()
			_ = json.NewEncoder(w).Encode(api.JobStatus{JobID: id, State: api.StateCompleted, CreatedAt: now, FinishedAt: &now})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":{"code":"not_found","message":"job %s not found"}}`, id)
	}))
	t.Cleanup(srv.Close)
	return client.New(srv.URL)
}

func TestCheck(t *testing.T) {
	sched := Schedule{Seed: 1, Duration: 30 * time.Second, Events: []Event{
		{At: 5 * time.Second, Hold: 5 * time.Second, Kind: "kill", Target: "hive-1"},
		{At: 20 * time.Second, Hold: 3 * time.Second, Kind: "pause", Target: "hive-2"},
	}}
	ctx := context.Background()
	q := queenWith(t, "job-a", "job-b")
	var hist checks.History
	var jobs []Job
	adopt := func(id string, acked, ended time.Duration) {
		out, err := hist.Adopt(ctx, q, api.OpInfer, id, nil)
		jobs = append(jobs, Job{Op: api.OpInfer, JobID: id, Acked: acked, Submitted: acked, Ended: ended, Kind: out.Kind, Err: err})
	}
	adopt("job-a", 1*time.Second, 2*time.Second)
	adopt("job-b", 4*time.Second, 12*time.Second) // across the kill, and consistent
	if vs := Check(ctx, q, &hist, jobs, sched); len(vs) != 0 {
		t.Fatalf("negative control: a consistent history has violations: %v", vs)
	}

	// Acknowledged before the kill, and then unknown to the queen: lost.
	adopt("job-lost", 4*time.Second, 8*time.Second)
	// Never acknowledged by the queen, during the pause.
	jobs = append(jobs, Job{Op: api.OpInfer, Submitted: 21 * time.Second, Ended: 21 * time.Second, Err: errors.New("submit: connection refused")})
	vs := Check(ctx, q, &hist, jobs, sched)
	if len(vs) != 2 {
		t.Fatalf("%d violations, want 2: %v", len(vs), vs)
	}
	all := strings.Join(vs, "\n")
	for _, want := range []string{
		"not acknowledged (the queen is never faulted): submit: connection refused; faults meanwhile: pause(hive-2) +20.000s–+23.000s",
		"infer job-lost: client never saw a terminator",
		"[acknowledged +4.000s, client done +8.000s; faults meanwhile: kill(hive-1) +5.000s–+10.000s]",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("violations do not say %q:\n%s", want, all)
		}
	}
}

func TestResultReport(t *testing.T) {
	s, err := Generate(9, 30*time.Second, twoHives, DefaultMenu, DefaultTiming)
	if err != nil {
		t.Fatal(err)
	}
	r := Result{Schedule: s, Jobs: []Job{{JobID: "job-1", Kind: sse.Done}, {JobID: "job-2", Err: errors.New("x")}}, Violations: []string{"infer job-2: client never saw a terminator"}, Wall: 41 * time.Second}
	if r.Verdict() != "FAIL" || r.Done() != 1 || r.Failed() != 1 {
		t.Fatalf("verdict %s, done %d, failed %d", r.Verdict(), r.Done(), r.Failed())
	}
	rep := r.Report()
	for _, want := range []string{"nemesis seed 9: 30s", "replay: RBEE_FAULT_SEED=9", "1 violations:\n  infer job-2"} {
		if !strings.Contains(rep, want) {
			t.Errorf("report lacks %q:\n%s", want, rep)
		}
	}
	tab := Table([]Result{r})
	if !strings.Contains(tab, fmt.Sprintf("| 9 | %d | %s |", len(s.Events), s.Kinds())) || !strings.Contains(tab, "| 1 | FAIL | 41s |") {
		t.Errorf("table:\n%s", tab)
	}
}
