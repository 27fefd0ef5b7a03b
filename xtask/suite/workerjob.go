package suite

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
)

// WorkerJobOf finds, in the log of the worker container svc, the id of the
// one inference it accepted with maxTokens: the queen does not say which
// worker job serves an infer, so tests give each job a distinct max_tokens
// and then observe that job on the worker itself.
func WorkerJobOf(t testing.TB, h *integration.Harness, svc string, maxTokens int) string {
	t.Helper()
	re := regexp.MustCompile(`inference (job-\S+): accepted max_tokens=` + strconv.Itoa(maxTokens) + ` `)
	var id string
	err := checks.Await(t.Context(), 60*time.Second, fmt.Sprintf("%s accepted an inference of %d tokens", svc, maxTokens), func(ctx context.Context) (bool, string, error) {
		logs, err := h.Logs(ctx, svc)
		if err != nil {
			return false, "", err
		}
		ms := re.FindAllStringSubmatch(logs, -1)
		if len(ms) > 1 {
			return false, "", fmt.Errorf("%s accepted %d inferences of %d tokens, want 1", svc, len(ms), maxTokens)
		}
		if len(ms) == 1 {
			id = ms[0][1]
		}
		return id != "", "not in the log yet", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// WorkerJobEnd reads a finished worker job's stream (through wc, a client
// of the worker) and returns its terminator,
// its token count and its end event.
func WorkerJobEnd(ctx context.Context, wc *client.Client, id string) (client.Outcome, int, api.End, error) {
	out, err := wc.FollowPath(ctx, "/v1/inference/"+id+"/stream", id, 0, nil)
	if err != nil {
		return out, 0, api.End{}, err
	}
	n := 0
	var end api.End
	for _, ev := range out.Events {
		switch ev.Name {
		case api.EventToken:
			n++
		case api.EventEnd:
			if err := json.Unmarshal([]byte(ev.Data), &end); err != nil {
				return out, n, end, fmt.Errorf("end event %q: %w", ev.Data, err)
			}
		}
	}
	return out, n, end, nil
}

// StartWorker brings up the full stack's queen and its standalone
// worker-1, generating one token per tokenDelay (RBEE_TOKEN_DELAY), and
// waits until the queen has registered worker-1 as fresh. It returns the
// harness, the queen's client and a client of worker-1 itself, carrying
// the token the queen sends it (worker-1 is standalone: its token is the
// one derived for the pseudo-hive "standalone"), so a test can watch the
// worker's own job while the queen relays it.
func StartWorker(t *testing.T, tokenDelay time.Duration) (*integration.Harness, *client.Client, *client.Client) {
	t.Helper()
	h := integration.Start(t, integration.FullStack, integration.WithServices("queen", "worker-1"),
		integration.WithEnv(map[string]string{"RBEE_TOKEN_DELAY": tokenDelay.String()}))
	q := h.MustQueen(t)
	if _, err := checks.AwaitWorker(t.Context(), q, "worker-1", 30*time.Second, "fresh", checks.Fresh); err != nil {
		t.Fatal(err)
	}
	token, err := client.WithWorkerTokenFrom(h.ClusterKeyFile(), "standalone")
	if err != nil {
		t.Fatal(err)
	}
	return h, q, client.New(h.MustURL(t, "worker-1", 9100), token)
}
