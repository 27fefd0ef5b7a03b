//go:build docker

package security

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// TestRogueAttacks runs each attack from its own rogue against one shared
// full-stack topology (queen, hive-1, standalone worker-1), in an order in
// which every attack finds the stack as the first one did: the two that
// stop hive-1 come last, the first of them starts it again.
func TestRogueAttacks(t *testing.T) {
	t.Parallel()
	e := start(t)
	for _, a := range []struct {
		name string
		run  func(*testing.T, *env)
	}{
		{"ForgedWorkerHeartbeatRefused", testForgedWorkerHeartbeatRefused},
		{"WrongKeyHeartbeatRefused", testWrongKeyHeartbeatRefused},
		{"ReplayedHeartbeatRefused", testReplayedHeartbeatRefused},
		{"ShutdownWithoutCredentialsRefused", testShutdownWithoutCredentialsRefused},
		{"HiveJobAPIWithoutCredentialsRefused", testHiveJobAPIWithoutCredentialsRefused},
		{"SignedHeartbeatCannotTakeOverAWorker", testSignedHeartbeatCannotTakeOverAWorker},
		{"ForgedHiveHeartbeatRefused", testForgedHiveHeartbeatRefused},
		{"SignedHeartbeatAccepted", testSignedHeartbeatAccepted},
	} {
		ok := t.Run(a.name, func(t *testing.T) {
			a.run(t, e.withRogue(t, "rogue-"+strings.ToLower(a.name[:min(len(a.name), 20)])))
		})
		if !ok {
			// Later attacks assume the stack as it was; stop at the first failure.
			t.FailNow()
		}
	}
}

// An unsigned worker heartbeat — taking over worker-1's URL, registering a
// new worker, or marking worker-1 stopping — is refused with 401.
func testForgedWorkerHeartbeatRefused(t *testing.T, e *env) {
	before := e.registry(t)
	for _, tc := range []struct {
		what string
		hb   api.WorkerHeartbeat
	}{
		{"take over worker-1", workerHB("worker-1", "standalone", e.rogue.URL, api.WorkerReady)},
		{"register a rogue worker", workerHB("w-rogue00001", "hive-1", e.rogue.URL, api.WorkerReady)},
		{"mark worker-1 stopping", workerHB("worker-1", "standalone", "http://worker-1:9100", api.WorkerStopping)},
	} {
		a := e.post(t, queenURL+"/v1/worker-heartbeat", unsigned(), mustJSON(t, tc.hb))
		mustRefuse(t, tc.what, a, http.StatusUnauthorized, "not signed")
	}
	e.mustHoldUp(t, before)
}

// A worker heartbeat signed with a key the cluster does not hold is
// refused with 401.
func testWrongKeyHeartbeatRefused(t *testing.T, e *env) {
	before := e.registry(t)
	hdr, body := sign(t, e.keyFile("wrong_cluster.key"), http.MethodPost, "/v1/worker-heartbeat",
		workerHB("worker-1", "standalone", e.rogue.URL, api.WorkerReady))
	mustRefuse(t, "worker heartbeat, wrong key", e.post(t, queenURL+"/v1/worker-heartbeat", hdr, body),
		http.StatusUnauthorized, "signature does not match")
	hdr, body = sign(t, e.keyFile("wrong_cluster.key"), http.MethodPost, "/v1/hive-heartbeat",
		api.HiveHeartbeat{HiveID: "hive-1", URL: e.rogue.URL, Timestamp: time.Now().UTC(), Devices: []api.Device{}, Workers: []string{}})
	mustRefuse(t, "hive heartbeat, wrong key", e.post(t, queenURL+"/v1/hive-heartbeat", hdr, body),
		http.StatusUnauthorized, "signature does not match")
	e.mustHoldUp(t, before)
}

// A captured signed heartbeat sent again is refused (409, not newer than
// the one accepted) and does not move last_seen; a captured signed hive
// job submission sent again is refused (401, replay) and runs once.
func testReplayedHeartbeatRefused(t *testing.T, e *env) {
	ctx := suite.Context(t, time.Minute)
	// The genuine, signed heartbeat of a standalone worker whose URL is the
	// rogue's (a model no infer asks for, so nothing is routed there).
	hb := workerHB("w-replay0001", "standalone", e.rogue.URL, api.WorkerReady)
	hb.Model = "security/control:model.bin"
	hdr, body := sign(t, e.h.ClusterKeyFile(), http.MethodPost, "/v1/worker-heartbeat", hb)
	if a := e.post(t, queenURL+"/v1/worker-heartbeat", hdr, body); a.Status != http.StatusOK {
		t.Fatalf("the genuine heartbeat: HTTP %d %s; want 200", a.Status, a.Body)
	}
	w, ok, err := checks.Worker(ctx, e.q, "w-replay0001")
	if err != nil || !ok {
		t.Fatalf("genuine heartbeat not registered: %v", err)
	}
	before := e.registry(t)
	// The copy, sent once at once and once after more than an interval.
	mustRefuse(t, "replayed heartbeat", e.post(t, queenURL+"/v1/worker-heartbeat", hdr, body), http.StatusConflict, "not newer")
	err = checks.Await(ctx, 4*interval+staleAfter, "hive-1 heartbeat past the replay", func(ctx context.Context) (bool, string, error) {
		h, err := checks.Hive(ctx, e.q, "hive-1")
		if err != nil || h.LastSeen == nil {
			return false, "", err
		}
		return h.LastSeen.Sub(w.LastSeen) > 2*interval, "hive-1 last_seen " + h.LastSeen.Sub(w.LastSeen).String() + " after the heartbeat", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, "replayed heartbeat, later", e.post(t, queenURL+"/v1/worker-heartbeat", hdr, body), http.StatusConflict, "not newer")
	if w2, _, err := checks.Worker(ctx, e.q, "w-replay0001"); err != nil || !w2.LastSeen.Equal(w.LastSeen) {
		t.Fatalf("last_seen moved on a replay: %v -> %v (%v)", w.LastSeen, w2.LastSeen, err)
	}

	// A signed job for the hive (harmless model_list), captured and sent twice.
	jhdr, jbody := sign(t, e.h.ClusterKeyFile(), http.MethodPost, "/v1/jobs", map[string]string{"operation": api.OpModelList})
	if a := e.post(t, hiveURL+"/v1/jobs", jhdr, jbody); a.Status != http.StatusOK {
		t.Fatalf("the genuine hive job: HTTP %d %s; want 200", a.Status, a.Body)
	}
	mustRefuse(t, "replayed hive job", e.post(t, hiveURL+"/v1/jobs", jhdr, jbody), http.StatusUnauthorized, "replay")
	e.mustHoldUp(t, before)
}

// Unsigned hive heartbeats are refused with 401: one for an unknown hive
// is not learned, one for configured hive-1 neither replaces its devices
// nor, after hive_stop, clears offline. A signed heartbeat of a hive not in
// hives.conf is refused with 403 (learn_hives is off).
func testForgedHiveHeartbeatRefused(t *testing.T, e *env) {
	fake := []api.Device{{ID: "GPU-0", Name: "forged", DeviceType: "gpu", VRAMGB: 80}}
	forged := func(id string) []byte {
		return mustJSON(t, api.HiveHeartbeat{HiveID: id, URL: e.rogue.URL, Timestamp: time.Now().UTC(), Devices: fake, Workers: []string{"w-rogue00001"}})
	}
	before := e.registry(t)
	mustRefuse(t, "unknown hive", e.post(t, queenURL+"/v1/hive-heartbeat", unsigned(), forged("hive-evil")), http.StatusUnauthorized, "not signed")
	mustRefuse(t, "overwrite hive-1", e.post(t, queenURL+"/v1/hive-heartbeat", unsigned(), forged("hive-1")), http.StatusUnauthorized, "not signed")
	hdr, body := sign(t, e.h.ClusterKeyFile(), http.MethodPost, "/v1/hive-heartbeat",
		api.HiveHeartbeat{HiveID: "hive-learned", URL: e.rogue.URL, Timestamp: time.Now().UTC(), Devices: []api.Device{}, Workers: []string{}})
	mustRefuse(t, "signed, not in hives.conf", e.post(t, queenURL+"/v1/hive-heartbeat", hdr, body), http.StatusForbidden, "not in hives.conf")
	e.mustUnchanged(t, before)

	// Offline stays offline: stop hive-1, then forge its heartbeat.
	suite.MustDone(t, suite.Run(t, time.Minute, e.q, e.hist, api.JobRequest{Operation: api.OpHiveStop, Alias: "hive-1"}))
	stopped := e.registry(t)
	mustRefuse(t, "clear hive-1 offline", e.post(t, queenURL+"/v1/hive-heartbeat", unsigned(), forged("hive-1")), http.StatusUnauthorized, "not signed")
	e.mustUnchanged(t, stopped)
	if h, err := checks.Hive(suite.Context(t, 30*time.Second), e.q, "hive-1"); err != nil || h.State != api.HiveOffline {
		t.Fatalf("hive-1 after a forged heartbeat while stopped: %+v, %v; want offline", h, err)
	}
	// worker-1 is standalone: infer still works, and nothing reached the rogue.
	e.mustInferFromRealWorker(t)
	e.mustRogueUntouched(t)
	suite.NothingLost(t, time.Minute, e.q, e.hist)
	// Leave hive-1 running for the attacks after this one.
	suite.MustDone(t, suite.Run(t, 2*time.Minute, e.q, e.hist, api.JobRequest{Operation: api.OpHiveStart, Alias: "hive-1"}))
	if err := checks.AwaitHiveState(suite.Context(t, time.Minute), e.q, "hive-1", api.HiveOnline, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// POST /v1/shutdown without credentials, or signed with the wrong key, is
// refused with 401 by the queen and by hive-1, which keep serving.
func testShutdownWithoutCredentialsRefused(t *testing.T, e *env) {
	before := e.registry(t)
	for _, target := range []string{queenURL, hiveURL} {
		mustRefuse(t, "shutdown "+target+", unsigned", e.post(t, target+"/v1/shutdown", unsigned(), nil), http.StatusUnauthorized, "not signed")
		hdr, body := sign(t, e.keyFile("wrong_cluster.key"), http.MethodPost, "/v1/shutdown", nil)
		mustRefuse(t, "shutdown "+target+", wrong key", e.post(t, target+"/v1/shutdown", hdr, body), http.StatusUnauthorized, "signature does not match")
		// A signature of another call does not open this one.
		hdr, body = sign(t, e.h.ClusterKeyFile(), http.MethodPost, "/v1/jobs", nil)
		mustRefuse(t, "shutdown "+target+", signature of another path", e.post(t, target+"/v1/shutdown", hdr, body), http.StatusUnauthorized, "signature does not match")
	}
	e.mustHoldUp(t, before)
}

// The hive's job API (worker_spawn, worker_process_delete, job status,
// stream and cancel) refuses callers without the cluster signature with
// 401, and no worker is started or stopped.
func testHiveJobAPIWithoutCredentialsRefused(t *testing.T, e *env) {
	before := e.registry(t)
	hv, err := e.h.Hive("hive-1")
	if err != nil {
		t.Fatal(err)
	}
	procsBefore := workerProcesses(t, hv)
	for _, body := range []map[string]string{
		{"operation": api.OpWorkerSpawn, "model": suite.TinyModel, "device": "cpu:0"},
		{"operation": api.OpWorkerProcessDelete, "worker_id": "w-0000000001"},
		{"operation": api.OpModelList},
	} {
		mustRefuse(t, "hive job "+body["operation"], e.post(t, hiveURL+"/v1/jobs", unsigned(), mustJSON(t, body)), http.StatusUnauthorized, "not signed")
	}
	for _, m := range []string{http.MethodGet, http.MethodDelete} {
		for _, p := range []string{"/v1/jobs/job-00000000-0000-0000-0000-000000000000", "/v1/jobs/job-00000000-0000-0000-0000-000000000000/stream"} {
			if m == http.MethodDelete && strings.HasSuffix(p, "/stream") {
				continue // no such route: not an authentication question
			}
			a := e.rogue.MustSend(t, m, hiveURL+p, unsigned(), nil)
			mustRefuse(t, m+" "+p, a, http.StatusUnauthorized, "not signed")
		}
	}
	if after := workerProcesses(t, hv); len(after) != len(procsBefore) {
		t.Fatalf("hive-1 workers changed: %d before, %d after: %+v", len(procsBefore), len(after), after)
	}
	e.mustHoldUp(t, before)
}

// A heartbeat signed with the cluster's key still cannot move worker-1 to
// another URL or register a worker its hive does not list (403): the
// registry binds workers to their hive.
func testSignedHeartbeatCannotTakeOverAWorker(t *testing.T, e *env) {
	before := e.registry(t)
	// Timestamped ahead (inside the 30 s window) so that it is newer than
	// worker-1's own heartbeats while it travels: the refusal must come from
	// the binding, not from the ordering rule.
	takeover := workerHB("worker-1", "standalone", e.rogue.URL, api.WorkerReady)
	takeover.Timestamp = takeover.Timestamp.Add(20 * time.Second)
	hdr, body := sign(t, e.h.ClusterKeyFile(), http.MethodPost, "/v1/worker-heartbeat", takeover)
	mustRefuse(t, "signed, move worker-1", e.post(t, queenURL+"/v1/worker-heartbeat", hdr, body), http.StatusForbidden, "registered at")
	hdr, body = sign(t, e.h.ClusterKeyFile(), http.MethodPost, "/v1/worker-heartbeat", workerHB("w-notlisted1", "hive-1", "http://hive-1:9150", api.WorkerReady))
	mustRefuse(t, "signed, worker hive-1 does not list", e.post(t, queenURL+"/v1/worker-heartbeat", hdr, body), http.StatusForbidden, "does not list")
	e.mustHoldUp(t, before)
}

// Negative control: the same kind of heartbeat, correctly signed and new,
// is accepted and registered, so the refusals above are not an artefact
// of the rogue's requests.
func testSignedHeartbeatAccepted(t *testing.T, e *env) {
	hb := workerHB("w-control001", "standalone", e.rogue.URL, api.WorkerReady)
	hb.Model = "security/control:model.bin" // never asked for: nothing is routed to the rogue
	hdr, body := sign(t, e.h.ClusterKeyFile(), http.MethodPost, "/v1/worker-heartbeat", hb)
	a := e.post(t, queenURL+"/v1/worker-heartbeat", hdr, body)
	if a.Status != http.StatusOK {
		t.Fatalf("signed heartbeat from the rogue: HTTP %d %s; want 200", a.Status, a.Body)
	}
	w, ok, err := checks.Worker(suite.Context(t, 30*time.Second), e.q, "w-control001")
	if err != nil || !ok || w.URL != e.rogue.URL || w.Model != hb.Model || w.Stale {
		t.Fatalf("registry row %+v (found %v, %v); want the signed heartbeat's worker, fresh", w, ok, err)
	}
	// And a signed shutdown request reaches the handler: hive-1 answers 200
	// and stops (the queen then sees it offline).
	hdr, body = sign(t, e.h.ClusterKeyFile(), http.MethodPost, "/v1/shutdown", nil)
	if a := e.post(t, hiveURL+"/v1/shutdown", hdr, body); a.Status != http.StatusOK {
		t.Fatalf("signed shutdown of hive-1: HTTP %d %s; want 200", a.Status, a.Body)
	}
	if err := checks.AwaitHiveState(suite.Context(t, time.Minute), e.q, "hive-1", api.HiveOffline, staleAfter+4*interval+5*time.Second); err != nil {
		t.Fatal(err)
	}
	e.mustInferFromRealWorker(t)
	e.mustRogueUntouched(t)
	suite.NothingLost(t, time.Minute, e.q, e.hist)
}
