//go:build docker

package security

import (
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

// TestSignatureWindowBounded: a correctly signed cluster call is accepted
// when its timestamp is inside the queen's and the hive's window around
// their clock (client.SignatureWindow, what both programs use) and refused
// with 401 outside it, in the past and in the future; a refused call
// changes nothing at its receiver.
func TestSignatureWindowBounded(t *testing.T) {
	t.Parallel()
	e := start(t).withRogue(t, "rogue-window")
	w := client.SignatureWindow
	// Half a window from each edge: a signature stamped now±w/2 stays inside
	// and one stamped now±3w/2 stays outside as long as it reaches its
	// receiver within w/2 of being signed (one hop on the test network;
	// each answer below reports how long it took).
	margin := w / 2
	inside := []time.Duration{-(w - margin), w - margin}
	outside := []time.Duration{-(w + margin), w + margin}
	key := e.h.ClusterKeyFile()

	// send signs body for path at now+skew and has the rogue post it to url.
	send := func(url, path string, body any, skew time.Duration) (integration.RogueAnswer, string) {
		t.Helper()
		t0 := time.Now()
		hdr, b := signAt(t, key, http.MethodPost, path, body, t0.Add(skew))
		a := e.post(t, url+path, hdr, b)
		return a, "signed " + skew.String() + " from now (window ±" + w.String() + "), answered after " + time.Since(t0).Round(time.Millisecond).String()
	}

	// Inside the window, both sides: the hive runs a job, the queen
	// registers a heartbeat of a control worker (a model no infer asks for,
	// so nothing is routed to the rogue).
	hb := func(state string) api.WorkerHeartbeat {
		h := workerHB("w-window0001", "standalone", e.rogue.URL, state)
		h.Model = "security/control:model.bin"
		return h
	}
	for _, skew := range inside {
		a, what := send(hiveURL, "/v1/jobs", map[string]string{"operation": api.OpModelList}, skew)
		if a.Status != http.StatusOK || !strings.Contains(a.Body, "job_id") {
			t.Fatalf("hive-1 model_list %s: HTTP %d %s; want 200 with a job id", what, a.Status, strings.TrimSpace(a.Body))
		}
		t.Logf("hive-1 model_list %s: accepted", what)
		a, what = send(queenURL, "/v1/worker-heartbeat", hb(api.WorkerReady), skew)
		if a.Status != http.StatusOK {
			t.Fatalf("queen worker heartbeat %s: HTTP %d %s; want 200", what, a.Status, strings.TrimSpace(a.Body))
		}
		t.Logf("queen worker heartbeat %s: accepted", what)
	}
	if cw, ok, err := checks.Worker(suite.Context(t, 30*time.Second), e.q, "w-window0001"); err != nil || !ok || cw.State != api.WorkerReady {
		t.Fatalf("control worker after heartbeats inside the window: %+v (found %v, %v); want registered, ready", cw, ok, err)
	}

	// Outside the window, both sides: every call is refused 401 and runs
	// nothing.
	before := e.registry(t)
	hv, err := e.h.Hive("hive-1")
	if err != nil {
		t.Fatal(err)
	}
	procsBefore := workerProcesses(t, hv)
	for _, skew := range outside {
		for _, c := range []struct {
			what, url, path string
			body            any
		}{
			{"hive-1 worker_spawn", hiveURL, "/v1/jobs", map[string]string{"operation": api.OpWorkerSpawn, "model": suite.TinyModel, "device": "cpu:0"}},
			{"hive-1 model_list", hiveURL, "/v1/jobs", map[string]string{"operation": api.OpModelList}},
			{"hive-1 shutdown", hiveURL, "/v1/shutdown", nil},
			{"queen shutdown", queenURL, "/v1/shutdown", nil},
			// Would mark the control worker stopping if accepted.
			{"queen worker heartbeat", queenURL, "/v1/worker-heartbeat", hb(api.WorkerStopping)},
		} {
			a, what := send(c.url, c.path, c.body, skew)
			mustRefuse(t, c.what+" "+what, a, http.StatusUnauthorized, "outside the accepted window")
		}
	}
	if after := workerProcesses(t, hv); len(after) != len(procsBefore) {
		t.Fatalf("hive-1 workers changed after signed jobs outside the window: %d before, %d after: %+v", len(procsBefore), len(after), after)
	}
	e.mustHoldUp(t, before)
}
