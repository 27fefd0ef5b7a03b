//go:build docker

package security

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"strconv"
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

// TestStaleSignatureAndWorkerTokenAttacks runs, against one shared
// full-stack topology, the attacks a captured or misaddressed credential
// allows: a correctly signed request whose timestamp is outside the ±30 s
// window, and a worker call with a wrong bearer token. The attack that
// stops hive-1 (the fresh-timestamp control of shutdown) comes last.
func TestStaleSignatureAndWorkerTokenAttacks(t *testing.T) {
	e := start(t)
	for _, a := range []struct {
		name string
		run  func(*testing.T, *env)
	}{
		{"WrongWorkerTokenRefused", testWrongWorkerTokenRefused},
		{"StaleSignedHiveJobRefused", testStaleSignedHiveJobRefused},
		{"StaleSignedShutdownRefused", testStaleSignedShutdownRefused},
		{"FreshSignedShutdownAccepted", testFreshSignedShutdownAccepted},
	} {
		ok := t.Run(a.name, func(t *testing.T) {
			a.run(t, e.withRogue(t, "rogue-"+strings.ToLower(a.name[:min(len(a.name), 20)])))
		})
		if !ok {
			t.FailNow()
		}
	}
}

// signAt returns the signature headers of method path with the exact body,
// stamped at, under the key in keyFile, computed as docs/PROTOCOL.md and
// docs/SECURITY.md describe it: HMAC-SHA256 of "rbee-v1\n" + method + "\n"
// + path + "\n" + Unix-ns timestamp + "\n" + hex SHA-256 of the body. The
// client only signs with the current time; these attacks need another one.
func signAt(t *testing.T, keyFile, method, path string, body []byte, at time.Time) http.Header {
	t.Helper()
	data, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(key) != 32 {
		t.Fatalf("key file %s: want 64 hex digits (%v)", keyFile, err)
	}
	ts := strconv.FormatInt(at.UnixNano(), 10)
	sum := sha256.Sum256(body)
	m := hmac.New(sha256.New, key)
	m.Write([]byte("rbee-v1\n" + method + "\n" + path + "\n" + ts + "\n" + hex.EncodeToString(sum[:])))
	h := unsigned()
	h.Set("X-Rbee-Timestamp", ts)
	h.Set("X-Rbee-Signature", "v1="+hex.EncodeToString(m.Sum(nil)))
	return h
}

// staleTimes are timestamps outside the ±30 s window on either side, far
// enough that no clock skew between the test and the containers (one
// kernel) brings them back in.
var staleTimes = []struct {
	what string
	d    time.Duration
}{{"10 minutes old", -10 * time.Minute}, {"10 minutes ahead", 10 * time.Minute}}

// A correctly signed hive job (worker_spawn, model_list) stamped outside
// the window is refused with 401 and hive-1 starts no worker; the same
// model_list signed by the same signer with a fresh timestamp is accepted
// (negative control: the signer is right, only the time is wrong).
func testStaleSignedHiveJobRefused(t *testing.T, e *env) {
	before := e.registry(t)
	hv, err := e.h.Hive("hive-1")
	if err != nil {
		t.Fatal(err)
	}
	procs := func() []api.WorkerProcess {
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
	procsBefore := procs()
	for _, st := range staleTimes {
		for _, body := range []map[string]string{
			{"operation": api.OpWorkerSpawn, "model": tinyModel, "device": "cpu:0"},
			{"operation": api.OpModelList},
		} {
			b := mustJSON(t, body)
			hdr := signAt(t, e.h.ClusterKeyFile(), http.MethodPost, "/v1/jobs", b, time.Now().Add(st.d))
			mustRefuse(t, "hive job "+body["operation"]+", "+st.what, e.post(t, hiveURL+"/v1/jobs", hdr, b),
				http.StatusUnauthorized, "outside the accepted window")
		}
	}
	if after := procs(); len(after) != len(procsBefore) {
		t.Fatalf("hive-1 workers changed after stale signed jobs: %d before, %d after: %+v", len(procsBefore), len(after), after)
	}
	b := mustJSON(t, map[string]string{"operation": api.OpModelList})
	a := e.post(t, hiveURL+"/v1/jobs", signAt(t, e.h.ClusterKeyFile(), http.MethodPost, "/v1/jobs", b, time.Now()), b)
	if a.Status != http.StatusOK || !strings.Contains(a.Body, "job_id") {
		t.Fatalf("control: freshly signed model_list on hive-1: HTTP %d %s; want 200 with a job id", a.Status, a.Body)
	}
	e.mustHoldUp(t, before)
}

// A correctly signed POST /v1/shutdown stamped outside the window is
// refused with 401 by the queen and by hive-1, which keep serving.
func testStaleSignedShutdownRefused(t *testing.T, e *env) {
	before := e.registry(t)
	for _, target := range []string{queenURL, hiveURL} {
		for _, st := range staleTimes {
			hdr := signAt(t, e.h.ClusterKeyFile(), http.MethodPost, "/v1/shutdown", nil, time.Now().Add(st.d))
			mustRefuse(t, "shutdown "+target+", "+st.what, e.post(t, target+"/v1/shutdown", hdr, nil),
				http.StatusUnauthorized, "outside the accepted window")
		}
	}
	e.mustHoldUp(t, before)
}

// Negative control of the shutdown attack, on the service the stack can
// lose: the same signer with a fresh timestamp stops hive-1 (200, then the
// queen sees it offline).
func testFreshSignedShutdownAccepted(t *testing.T, e *env) {
	hdr := signAt(t, e.h.ClusterKeyFile(), http.MethodPost, "/v1/shutdown", nil, time.Now())
	if a := e.post(t, hiveURL+"/v1/shutdown", hdr, nil); a.Status != http.StatusOK {
		t.Fatalf("freshly signed shutdown of hive-1: HTTP %d %s; want 200", a.Status, a.Body)
	}
	if err := checks.AwaitHiveState(suite.Context(t, time.Minute), e.q, "hive-1", api.HiveOffline, staleAfter+4*interval+5*time.Second); err != nil {
		t.Fatal(err)
	}
	e.mustInferFromRealWorker(t)
	e.mustRogueUntouched(t)
}

// worker-1 (standalone, started with the cluster secret) refuses an
// inference with no token, with "Bearer wrong" and with the token of
// another hive's workers (401, no job id); with its own token (derived for
// "standalone") the same request runs. A wrong token neither reads nor
// cancels that job: at the worker it stays as the right token sees it.
func testWrongWorkerTokenRefused(t *testing.T, e *env) {
	before := e.registry(t)
	opt, err := client.WithWorkerTokenFrom(e.h.ClusterKeyFile(), "hive-1")
	if err != nil {
		t.Fatal(err)
	}
	otherHive := bearer(t, opt)
	body := mustJSON(t, api.InferenceRequest{Prompt: "Alice", MaxTokens: 8})
	for _, tc := range []struct {
		what, auth string
		parts      []string
	}{
		{"no token", "", []string{"missing Authorization"}},
		{"Bearer wrong", "Bearer wrong", []string{"invalid bearer token"}},
		{"hive-1's worker token", otherHive, []string{"invalid bearer token"}},
	} {
		hdr := unsigned()
		if tc.auth != "" {
			hdr.Set("Authorization", tc.auth)
		}
		a := e.post(t, workerURL+"/v1/inference", hdr, body)
		mustRefuse(t, "worker-1 inference, "+tc.what, a, http.StatusUnauthorized, tc.parts...)
		if strings.Contains(a.Body, "job_id") {
			t.Fatalf("worker-1 inference, %s: refused answer carries a job: %s", tc.what, a.Body)
		}
	}

	// Control: the right token runs the same request.
	opt, err = client.WithWorkerTokenFrom(e.h.ClusterKeyFile(), "standalone")
	if err != nil {
		t.Fatal(err)
	}
	right := bearer(t, opt)
	hdr := unsigned()
	hdr.Set("Authorization", right)
	a := e.post(t, workerURL+"/v1/inference", hdr, body)
	if a.Status/100 != 2 || !strings.Contains(a.Body, "job_id") {
		t.Fatalf("worker-1 inference with its own token: HTTP %d %s; want accepted with a job id", a.Status, a.Body)
	}
	var acc api.JobAccepted
	if err := json.Unmarshal([]byte(a.Body), &acc); err != nil || acc.JobID == "" {
		t.Fatalf("worker-1 accepted answer %q: %v", a.Body, err)
	}
	// The wrong tokens can neither read nor cancel it.
	for _, m := range []string{http.MethodGet, http.MethodDelete} {
		h := unsigned()
		h.Set("Authorization", "Bearer wrong")
		mustRefuse(t, m+" worker-1 job, Bearer wrong", e.rogue.MustSend(t, m, workerURL+"/v1/inference/"+acc.JobID, h, nil),
			http.StatusUnauthorized, "invalid bearer token")
	}
	wc := client.New(e.h.MustURL(t, "worker-1", 9100), opt)
	var st api.JobStatus
	ctx := suite.Context(t, time.Minute)
	if err := checks.Await(ctx, 30*time.Second, "worker job "+acc.JobID+" finished", func(ctx2 context.Context) (bool, string, error) {
		if err := wc.Do(ctx2, http.MethodGet, "/v1/inference/"+acc.JobID, nil, &st); err != nil {
			return false, "", err
		}
		return st.State.Finished(), "state " + string(st.State), nil
	}); err != nil {
		t.Fatal(err)
	}
	if st.State == api.StateCancelled {
		t.Fatalf("worker job %s was cancelled by a request with a wrong token: %+v", acc.JobID, st)
	}
	e.mustHoldUp(t, before)
}

// bearer is the Authorization header a client built with opt sends.
func bearer(t *testing.T, opt client.Option) string {
	t.Helper()
	c := &capture{}
	cl := client.New("http://token.invalid", client.WithHTTPClient(&http.Client{Transport: c}), opt)
	if err := cl.Do(context.Background(), http.MethodGet, "/health", nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := c.header.Get("Authorization"); strings.HasPrefix(got, "Bearer ") && len(got) > len("Bearer ") {
		return got
	}
	t.Fatalf("client sent Authorization %q; want a bearer token", c.header.Get("Authorization"))
	return ""
}
