package queen

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/internal/api"
)

// An infer job's stream names the worker and the hive that served it (a
// "schedule" narration with the hive field set), so a client can tell
// where its request ran; the Docker suites count load per hive from it.
func TestInferNarratesChosenWorker(t *testing.T) {
	q := newTestQueen(t, nil, nil)
	w1, w2 := newFakeWorker(t, "w-1"), newFakeWorker(t, "w-2")
	heartbeatWorker(t, q, w1, "hive-1", "m")
	heartbeatWorker(t, q, w2, "hive-2", "m")
	served := map[string]int{}
	for i := 0; i < 4; i++ {
		out := q.run(t, api.JobRequest{Operation: api.OpInfer, Model: "m", Prompt: "x", MaxTokens: 1})
		wantDone(t, out)
		var routes []api.Narration
		for _, n := range narrations(t, out) {
			if n.Actor == "queen" && n.Action == "schedule" {
				routes = append(routes, n)
			}
		}
		if len(routes) != 1 {
			t.Fatalf("job %s: %d schedule narrations %+v; want 1", out.JobID, len(routes), routes)
		}
		n := routes[0]
		var want string
		switch n.Hive {
		case "hive-1":
			want = "routing inference for m to worker w-1 on hive-1 ("
		case "hive-2":
			want = "routing inference for m to worker w-2 on hive-2 ("
		default:
			t.Fatalf("schedule narration has hive %q: %+v", n.Hive, n)
		}
		if !strings.HasPrefix(n.Message, want) || !strings.HasSuffix(n.Message, " in flight)") {
			t.Fatalf("schedule narration %q; want %q…\" in flight)\"", n.Message, want)
		}
		served[n.Hive]++
	}
	// The narration tells the truth: each worker saw what was routed to it.
	if got := fmt.Sprint(len(w1.requests()), len(w2.requests())); got != fmt.Sprint(served["hive-1"], served["hive-2"]) {
		t.Fatalf("workers saw %s requests; narration says hive-1 %d, hive-2 %d", got, served["hive-1"], served["hive-2"])
	}
}
