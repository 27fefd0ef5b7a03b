//go:build docker

package security

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

const (
	// interval is the hive and worker heartbeat interval of the stack.
	interval = 500 * time.Millisecond
	// staleAfter is configs/full-stack/queen.toml's stale_after.
	staleAfter = 3 * time.Second
	// queenURL and hiveURL are how the rogue reaches them on the network.
	queenURL = "http://queen:8500"
	hiveURL  = "http://hive-1:9000"
)

// env is one attacked stack: queen, hive-1, the standalone worker-1 (and the
// hub it downloads from), and the rogue of the current attack.
type env struct {
	h     *integration.Harness
	q     *client.Client // the queen, signing (trusted test)
	rogue *integration.Rogue
	hist  *checks.History
}

// start brings up the stack and waits until hive-1 and worker-1 are fresh
// in the registry. Attacks share it (bringing up a full stack per attack
// costs minutes on a loaded machine); each gets its own rogue (withRogue),
// so each rogue's record holds only what reached it during its attack.
func start(t *testing.T) *env {
	t.Helper()
	h := integration.Start(t, integration.FullStack,
		integration.WithServices("queen", "hive-1", "worker-1"),
		integration.WithEnv(map[string]string{"RBEE_HEARTBEAT_INTERVAL": interval.String()}))
	e := &env{h: h, q: h.MustQueen(t), hist: &checks.History{}}
	ctx := suite.Context(t, time.Minute)
	if _, err := checks.AwaitWorker(ctx, e.q, "worker-1", 30*time.Second, "registered", checks.Fresh); err != nil {
		t.Fatal(err)
	}
	if err := checks.AwaitHiveState(ctx, e.q, "hive-1", api.HiveOnline, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return e
}

// withRogue returns e with a new rogue called name on the network.
func (e *env) withRogue(t *testing.T, name string) *env {
	t.Helper()
	c := *e
	c.rogue = e.h.MustAddRogue(t, name)
	return &c
}

// keyFile is a key file under keys/: "cluster.key" (the cluster's secret)
// or "wrong_cluster.key" (a key nobody trusts).
func (e *env) keyFile(name string) string {
	return filepath.Join(filepath.Dir(e.h.ClusterKeyFile()), name)
}

// capture is a transport that records the request it is given and answers
// 200 without sending anything: it turns the client's signing into a way
// to get the headers of a signed request, which the rogue then sends.
type capture struct {
	header http.Header
	body   []byte
}

func (c *capture) RoundTrip(r *http.Request) (*http.Response, error) {
	c.header = r.Header.Clone()
	if r.Body != nil {
		c.body, _ = io.ReadAll(r.Body)
	}
	return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader("{}")),
		Header: http.Header{"Content-Type": {"application/json"}}, Request: r}, nil
}

// sign returns the headers and exact body of method path with body v,
// signed now with the key in keyFile.
func sign(t *testing.T, keyFile, method, path string, v any) (http.Header, []byte) {
	t.Helper()
	return signAt(t, keyFile, method, path, v, time.Now())
}

// signAt is sign with the signature stamped at instead of now.
func signAt(t *testing.T, keyFile, method, path string, v any, at time.Time) (http.Header, []byte) {
	t.Helper()
	opt, err := client.WithKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	c := &capture{}
	cl := client.New("http://signer.invalid", client.WithHTTPClient(&http.Client{Transport: c}), opt,
		client.WithSigningClock(func() time.Time { return at }))
	if err := cl.Do(t.Context(), method, path, v, nil); err != nil {
		t.Fatalf("signing %s %s: %v", method, path, err)
	}
	if c.header.Get("X-Rbee-Signature") == "" {
		t.Fatalf("signing %s %s produced no signature header", method, path)
	}
	return c.header, c.body
}

// unsigned is the header of a JSON request with no credentials.
func unsigned() http.Header { return http.Header{"Content-Type": {"application/json"}} }

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mustRefuse fails unless the answer has status want and its error message
// contains every part.
func mustRefuse(t *testing.T, what string, a integration.RogueAnswer, want int, parts ...string) {
	t.Helper()
	if a.Status != want {
		t.Fatalf("%s: HTTP %d %s; want %d", what, a.Status, strings.TrimSpace(a.Body), want)
	}
	var eb api.ErrorBody
	if err := json.Unmarshal([]byte(a.Body), &eb); err != nil {
		t.Fatalf("%s: answer %q is not a JSON error: %v", what, a.Body, err)
	}
	for _, p := range parts {
		if !strings.Contains(eb.Error.Message, p) {
			t.Fatalf("%s: error %q does not say %q", what, eb.Error.Message, p)
		}
	}
	t.Logf("%s: refused, HTTP %d %s: %s", what, a.Status, eb.Error.Code, eb.Error.Message)
}

// worker, hive are the parts of the registry an attack could change (not
// last_seen, which moves with every genuine heartbeat).
type worker struct{ ID, Hive, Model, Device, URL, State string }
type hive struct {
	Alias, Hostname, State string
	Port                   int
	Devices                []api.Device
}

type registry struct {
	Workers []worker
	Hives   []hive
}

func (e *env) registry(t *testing.T) registry {
	t.Helper()
	ctx := suite.Context(t, 30*time.Second)
	ws, err := e.q.Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := e.q.Hives(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var r registry
	for _, w := range ws {
		r.Workers = append(r.Workers, worker{w.WorkerID, w.HiveID, w.Model, w.Device, w.URL, w.State})
	}
	for _, h := range hs {
		r.Hives = append(r.Hives, hive{h.Alias, h.Hostname, h.State, h.HivePort, h.Devices})
	}
	return r
}

// mustUnchanged fails unless the registry is what it was before the attack.
func (e *env) mustUnchanged(t *testing.T, before registry) {
	t.Helper()
	if after := e.registry(t); !reflect.DeepEqual(before, after) {
		t.Fatalf("registry changed by a refused attack:\nbefore %+v\nafter  %+v", before, after)
	}
}

// mustStillServing proves the queen and hive-1 kept running after the
// attack: hive-1's heartbeats keep arriving (last_seen moves past the
// moment after the attack by two intervals), and both answer /health.
func (e *env) mustStillServing(t *testing.T) {
	t.Helper()
	ctx := suite.Context(t, time.Minute)
	before, err := checks.Hive(ctx, e.q, "hive-1")
	if err != nil || before.LastSeen == nil {
		t.Fatalf("hive-1 after the attack: %+v, %v", before, err)
	}
	mark := *before.LastSeen
	err = checks.Await(ctx, 4*interval+staleAfter, "hive-1 heartbeats after the attack", func(ctx context.Context) (bool, string, error) {
		h, err := checks.Hive(ctx, e.q, "hive-1")
		if err != nil || h.LastSeen == nil {
			return false, "", err
		}
		return h.State == api.HiveOnline && h.LastSeen.Sub(mark) >= 2*interval,
			fmt.Sprintf("hive-1 %s, last_seen %s after the mark", h.State, h.LastSeen.Sub(mark)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range []struct {
		name string
		port int
	}{{"queen", 8500}, {"hive-1", 9000}} {
		c := client.New(e.h.MustURL(t, svc.name, svc.port))
		if s, err := c.Health(ctx); err != nil || s != "ok" {
			t.Fatalf("%s /health after the attack: %q, %v", svc.name, s, err)
		}
	}
}

// mustInferFromRealWorker runs an infer through the queen and fails unless
// the real worker-1 served it.
func (e *env) mustInferFromRealWorker(t *testing.T) {
	t.Helper()
	o := suite.Run(t, time.Minute, e.q, e.hist, api.JobRequest{Operation: api.OpInfer, Model: suite.TinyModel, Prompt: "Alice", MaxTokens: 8})
	r := suite.Served(t, o)
	text, err := client.Tokens(o)
	if err != nil {
		t.Fatal(err)
	}
	if r.WorkerID != "worker-1" || text == "" || strings.Contains(text, "pwned") {
		t.Fatalf("infer routed to %+v, tokens %q; want worker-1's own tokens", r, text)
	}
}

// mustRogueUntouched fails if anything reached the rogue's listener: no
// request at all was routed to it, so no prompt and no token.
func (e *env) mustRogueUntouched(t *testing.T) {
	t.Helper()
	reqs := e.rogue.MustRequests(t)
	for _, r := range reqs {
		t.Errorf("rogue received %s %s from %s (Authorization %q)", r.Method, r.Path, r.Remote, r.Authorization)
	}
	if len(reqs) > 0 {
		t.FailNow()
	}
}

// mustHoldUp is the common tail of every attack test.
func (e *env) mustHoldUp(t *testing.T, before registry) {
	t.Helper()
	e.mustUnchanged(t, before)
	e.mustStillServing(t)
	e.mustInferFromRealWorker(t)
	e.mustRogueUntouched(t)
	suite.NothingLost(t, time.Minute, e.q, e.hist)
}

// workerHB is a heartbeat for worker id, pointing the queen at url.
func workerHB(id, hiveID, url, state string) api.WorkerHeartbeat {
	return api.WorkerHeartbeat{WorkerID: id, HiveID: hiveID, Model: suite.TinyModel, Device: "cpu:0", URL: url, State: state, Timestamp: time.Now().UTC()}
}

// post sends body to url from the rogue.
func (e *env) post(t *testing.T, url string, header http.Header, body []byte) integration.RogueAnswer {
	t.Helper()
	return e.rogue.MustSend(t, http.MethodPost, url, header, bytes.Clone(body))
}

// workerProcesses is hive-1's worker process list, asked with the harness's
// signed client (hv): what the hive itself runs, whatever the queen thinks.
func workerProcesses(t *testing.T, hv *client.Client) []api.WorkerProcess {
	t.Helper()
	o, err := hv.Run(suite.Context(t, time.Minute), api.JobRequest{Operation: api.OpWorkerProcessList}, nil)
	if err != nil {
		t.Fatalf("signed worker_process_list on hive-1: %v", err)
	}
	r, err := checks.Result[api.WorkerList](o)
	if err != nil {
		t.Fatal(err)
	}
	return r.Workers
}
