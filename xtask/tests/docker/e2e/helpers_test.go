//go:build docker

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// hiveBinary is where hive_install puts rbee-hive on a hive machine
// (docs/PROTOCOL.md, the hive container's layout).
const hiveBinary = "/home/rbee/.local/bin/rbee-hive"

// Deadlines: generous, because the machine has two cores and other suites
// may run at the same time; none of them is an assertion about speed.
const (
	opTimeout     = 2 * time.Minute  // one job, submit to terminator
	stateTimeout  = 30 * time.Second // a registry state (online, fresh, stale)
	healthTimeout = 60 * time.Second // a container (re)started by the harness
	keeperTimeout = 90 * time.Second // one rbee-keeper run
)

// awaitOnline waits until the queen has a heartbeat from each hive.
func awaitOnline(t *testing.T, q *client.Client, hives ...string) {
	t.Helper()
	for _, hv := range hives {
		if err := checks.AwaitHiveState(t.Context(), q, hv, api.HiveOnline, stateTimeout); err != nil {
			t.Fatal(err)
		}
	}
}

// spawnWorker puts model into hive's catalog (model_download, a no-op when
// it is there) and starts a worker for it on cpu:0 through the queen; it
// returns once the worker's own heartbeat has registered it, fresh and
// ready, with that hive and model (suite.SpawnWorker).
func spawnWorker(t *testing.T, hist *checks.History, q *client.Client, hive, model string) api.WorkerProcess {
	t.Helper()
	suite.Download(t, q, hist, hive, model)
	return suite.SpawnWorker(t, q, hist, hive, model)
}

// inferAll runs n infer jobs at once (request i from mk(i)) and returns
// their outcomes; a job that cannot be followed to a terminator fails the
// test.
func inferAll(t *testing.T, hist *checks.History, q *client.Client, n int, mk func(i int) api.JobRequest) []client.Outcome {
	t.Helper()
	outs := make([]client.Outcome, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
			defer cancel()
			outs[i], errs[i] = hist.Run(ctx, q, mk(i))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("infer jobs not followed to their end: %v", err)
	}
	return outs
}

// hiveDaemonExit asks, from inside hive's container, for the hive daemon's
// /health; curl's exit code says what happened (0 answered, 7 refused).
func hiveDaemonExit(t *testing.T, h *integration.Harness, hive string) int {
	t.Helper()
	return h.MustExec(t, hive, []string{"curl", "-sS", "-o", "/dev/null", "-m", "3", "http://localhost:9000/health"}).ExitCode
}

// keeperRun is one finished rbee-keeper invocation.
type keeperRun struct {
	stdout, stderr string
	code           int
}

// runKeeper runs the rbee-keeper built by TestMain on the test host.
func runKeeper(t *testing.T, args ...string) keeperRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), keeperTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, keeperBin, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"} // no RBEE_QUEEN_URL from the caller's shell
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := keeperRun{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		r.code = ee.ExitCode()
	default:
		t.Fatalf("rbee-keeper %s: %v (ctx %v)\nstderr:\n%s", strings.Join(args, " "), err, ctx.Err(), r.stderr)
	}
	return r
}

var acceptedLine = regexp.MustCompile(`(?m)^rbee-keeper: job (job-\S+) \((\S+)\) accepted$`)

// jobID is the id of the job the keeper says the queen accepted.
func (r keeperRun) jobID(t *testing.T) string {
	t.Helper()
	m := acceptedLine.FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("rbee-keeper did not say which job the queen accepted; stderr:\n%s", r.stderr)
	}
	return m[1]
}

// hubChecksum asks the hub (HEAD, from the test host) for the sha256 and
// size it announces for model (org/repo:file).
func hubChecksum(t *testing.T, h *integration.Harness, model string) (sha string, size int64, path string) {
	t.Helper()
	org, rest, _ := strings.Cut(model, "/")
	repo, file, _ := strings.Cut(rest, ":")
	path = fmt.Sprintf("/%s/%s/resolve/main/%s", org, repo, file)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, h.MustURL(t, "hub", 8080)+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("HEAD hub %s: %v", path, err)
	}
	resp.Body.Close()
	sha = resp.Header.Get("X-Checksum-Sha256")
	if resp.StatusCode != http.StatusOK || len(sha) != 64 || resp.ContentLength <= 0 {
		t.Fatalf("HEAD hub %s: %s, X-Checksum-Sha256 %q, Content-Length %d", path, resp.Status, sha, resp.ContentLength)
	}
	return sha, resp.ContentLength, path
}

// hubRequest is one entry of the hub's GET /_hub/requests.
type hubRequest struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Range  string `json:"range"`
	Status int    `json:"status"`
	Bytes  int64  `json:"bytes"`
	Cut    bool   `json:"cut"`
}

// hubRequests is what the hub says it served so far.
func hubRequests(t *testing.T, h *integration.Harness) []hubRequest {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var reqs []hubRequest
	if err := client.New(h.MustURL(t, "hub", 8080)).Do(ctx, http.MethodGet, "/_hub/requests", nil, &reqs); err != nil {
		t.Fatalf("hub /_hub/requests: %v", err)
	}
	return reqs
}
