//go:build docker

// Package workerlifecycle tests, against real containers, how the queen
// drives workers on a hive: spawning a worker
// after a model download, listing workers, deleting one, and spawning on a
// specific (simulated) device. Each test brings up the queen, hive-1 and the
// model hub of the full-stack topology (the hub is where models come from).
//
// Run it (images from `go run mage.go setup`):
//
//	go test -tags docker -count=1 ./xtask/tests/docker/workerlifecycle/
package workerlifecycle

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// Spawn via queen: after model_download, worker_spawn returns pid, port and
// URL; the worker is healthy from inside the network and registered by heartbeat.
func TestSpawnViaQueen(t *testing.T) {
	t.Parallel()
	h, q := suite.StartHive(t, gpus(0))
	ctx := t.Context()
	var hist checks.History

	m := suite.Download(t, q, &hist, hive, suite.TinyModel)
	if m.ID != suite.TinyModel || m.Size <= 0 || len(m.SHA256) != 64 {
		t.Fatalf("model_download result %+v", m)
	}
	w := suite.Spawn(t, q, &hist, hive, suite.TinyModel, "cpu:0")
	if w.WorkerID == "" || w.PID <= 0 || w.Port <= 0 || w.URL == "" {
		t.Fatalf("worker_spawn result lacks id, pid, port or URL: %+v", w)
	}
	if w.Port == hivePort {
		t.Fatalf("worker got the hive's own port %d", w.Port)
	}
	if !strings.HasPrefix(w.URL, "http://") || !strings.HasSuffix(w.URL, ":"+itoa(w.Port)) || strings.Contains(w.URL, "localhost") || strings.Contains(w.URL, "127.0.0.1") {
		t.Fatalf("worker URL %q is not an advertised http URL on port %d", w.URL, w.Port)
	}
	if w.Model != suite.TinyModel || w.Device != "cpu:0" || w.State != "running" {
		t.Fatalf("worker_spawn result %+v; want model %s, device cpu:0, state running", w, suite.TinyModel)
	}
	// The pid is the worker process itself, serving this model on this port.
	if cmd := procCmdline(t, h, hive, w.PID); !strings.Contains(cmd, "llm-worker-rbee") || !strings.Contains(cmd, itoa(w.Port)) {
		t.Fatalf("pid %d on %s runs %q; want llm-worker-rbee on port %d", w.PID, hive, cmd, w.Port)
	}

	wh, err := workerHealth(t, h, w.URL)
	if err != nil {
		t.Fatal(err)
	}
	if wh.Status != api.WorkerReady || wh.WorkerID != w.WorkerID || wh.Model != suite.TinyModel || wh.Device != "cpu:0" {
		t.Fatalf("worker /health = %+v; want ready %s %s cpu:0", wh, w.WorkerID, suite.TinyModel)
	}

	row, err := checks.AwaitWorker(ctx, q, w.WorkerID, 15*time.Second, "registered by heartbeat", checks.Fresh)
	if err != nil {
		t.Fatal(err)
	}
	if row.HiveID != hive || row.URL != w.URL || row.Model != suite.TinyModel || row.Device != "cpu:0" || row.State != api.WorkerReady {
		t.Fatalf("queen's row %+v; want hive %s, url %s, model %s, cpu:0, ready", row, hive, w.URL, suite.TinyModel)
	}
	suite.NothingLost(t, 30*time.Second, q, &hist)
}

// List: three workers are listed with their devices and distinct ports, none
// equal to the hive's port.
func TestListWorkers(t *testing.T) {
	t.Parallel()
	_, q := suite.StartHive(t, gpus(2))
	var hist checks.History

	suite.Download(t, q, &hist, hive, suite.TinyModel)
	devices := []string{"cpu:0", "gpu:0", "gpu:1"}
	spawned := map[string]api.WorkerProcess{}
	for _, d := range devices {
		w := suite.Spawn(t, q, &hist, hive, suite.TinyModel, d)
		spawned[w.WorkerID] = w
	}
	if len(spawned) != 3 {
		t.Fatalf("three spawns gave %d distinct worker ids", len(spawned))
	}

	list := suite.ProcessList(t, q, &hist, hive)
	if len(list) != 3 {
		t.Fatalf("worker_process_list has %d workers, want 3: %+v", len(list), list)
	}
	ports := map[int]string{}
	for _, got := range list {
		want, ok := spawned[got.WorkerID]
		if !ok {
			t.Fatalf("listed worker %s was never spawned (%+v)", got.WorkerID, got)
		}
		if got.Device != want.Device || got.Port != want.Port || got.PID != want.PID || got.URL != want.URL || got.Model != suite.TinyModel {
			t.Errorf("listed %+v; spawn said %+v", got, want)
		}
		if got.State != "running" {
			t.Errorf("worker %s is %s, want running", got.WorkerID, got.State)
		}
		if got.Port == hivePort {
			t.Errorf("worker %s has the hive's port %d", got.WorkerID, got.Port)
		}
		if other, dup := ports[got.Port]; dup {
			t.Errorf("workers %s and %s share port %d", other, got.WorkerID, got.Port)
		}
		ports[got.Port] = got.WorkerID
	}
	var listed []string
	for _, w := range list {
		listed = append(listed, w.Device)
	}
	for _, d := range devices {
		if !contains(listed, d) {
			t.Errorf("no listed worker on %s (listed devices %v)", d, listed)
		}
	}
	suite.NothingLost(t, 30*time.Second, q, &hist)
}

// Delete: the deleted worker's process is gone and it leaves the queen's live
// set; the other workers are untouched.
func TestDeleteWorker(t *testing.T) {
	t.Parallel()
	h, q := suite.StartHive(t, gpus(0))
	ctx := t.Context()
	var hist checks.History

	suite.Download(t, q, &hist, hive, suite.TinyModel)
	var ws []api.WorkerProcess
	for range 3 {
		ws = append(ws, suite.Spawn(t, q, &hist, hive, suite.TinyModel, "cpu:0"))
	}
	for _, w := range ws {
		if _, err := checks.AwaitWorker(ctx, q, w.WorkerID, 15*time.Second, "registered", checks.Fresh); err != nil {
			t.Fatal(err)
		}
	}
	victim, others := ws[1], []api.WorkerProcess{ws[0], ws[2]}

	del := suite.Result[api.WorkerProcess](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpWorkerProcessDelete, HiveID: hive, WorkerID: victim.WorkerID})
	if del.WorkerID != victim.WorkerID || del.State != "exited" {
		t.Fatalf("worker_process_delete result %+v; want %s exited", del, victim.WorkerID)
	}
	if st := procState(t, h, hive, victim.PID); st != "" {
		t.Fatalf("deleted worker's pid %d is still there (state %s)", victim.PID, st)
	}
	// Removed from the queen's registry at once (PROTOCOL departure 14), and
	// it must not come back: its process cannot heartbeat any more. Watch
	// for longer than stale_after (3 s) plus a few heartbeat intervals.
	// This watches that a state holds (not waiting for one), so it is a
	// ticker over a fixed window rather than checks.Await.
	watch := time.NewTimer(5 * time.Second)
	defer watch.Stop()
	tick := time.NewTicker(checks.PollInterval)
	defer tick.Stop()
	for done := false; !done; {
		row, ok, err := checks.Worker(ctx, q, victim.WorkerID)
		if err != nil {
			t.Fatal(err)
		}
		if ok && !row.Stale {
			t.Fatalf("deleted worker %s is still in the queen's live set: %+v", victim.WorkerID, row)
		}
		select {
		case <-watch.C:
			done = true
		case <-tick.C:
		}
	}

	list := suite.ProcessList(t, q, &hist, hive)
	for _, w := range list {
		if w.WorkerID == victim.WorkerID {
			t.Fatalf("deleted worker still in the hive's list: %+v", w)
		}
	}
	if len(list) != 2 {
		t.Fatalf("hive lists %d workers after the delete, want 2: %+v", len(list), list)
	}
	for _, o := range others {
		if !alive(t, h, hive, o.PID) {
			t.Errorf("untouched worker %s (pid %d) is gone", o.WorkerID, o.PID)
		}
		row, ok, err := checks.Worker(ctx, q, o.WorkerID)
		if err != nil || !ok || row.Stale {
			t.Errorf("untouched worker %s in the queen: %+v registered=%v err=%v", o.WorkerID, row, ok, err)
		}
		if !containsWorker(list, o.WorkerID, o.PID) {
			t.Errorf("untouched worker %s (pid %d) missing from the hive's list %+v", o.WorkerID, o.PID, list)
		}
		if wh, err := workerHealth(t, h, o.URL); err != nil || wh.Status != api.WorkerReady {
			t.Errorf("untouched worker %s /health: %+v %v", o.WorkerID, wh, err)
		}
	}
	suite.NothingLost(t, 30*time.Second, q, &hist)
}

// Spawn on a specific device: on a hive with two simulated GPUs gpu:1 is
// honoured (health and heartbeat say gpu:1); gpu:7 is an [ERROR] naming the device.
func TestSpawnOnDevice(t *testing.T) {
	t.Parallel()
	h, q := suite.StartHive(t, gpus(2))
	ctx := t.Context()
	var hist checks.History

	suite.Download(t, q, &hist, hive, suite.TinyModel)
	w := suite.Spawn(t, q, &hist, hive, suite.TinyModel, "gpu:1")
	if w.Device != "gpu:1" {
		t.Fatalf("spawned on %s, want gpu:1 (%+v)", w.Device, w)
	}
	wh, err := workerHealth(t, h, w.URL)
	if err != nil {
		t.Fatal(err)
	}
	if wh.Device != "gpu:1" || wh.WorkerID != w.WorkerID {
		t.Fatalf("worker /health = %+v; want device gpu:1", wh)
	}
	if _, err := checks.AwaitWorker(ctx, q, w.WorkerID, 15*time.Second, "heartbeating on gpu:1", func(r api.WorkerInfo) bool {
		return !r.Stale && r.Device == "gpu:1"
	}); err != nil {
		t.Fatal(err)
	}

	runCtx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	out, err := hist.Run(runCtx, q, api.JobRequest{Operation: api.OpWorkerSpawn, HiveID: hive, Model: suite.TinyModel, Device: "gpu:7"})
	if err != nil {
		t.Fatal(err)
	}
	if out.Terminator() == api.TermDone || !strings.HasPrefix(out.Terminator(), api.TermError) {
		t.Fatalf("spawn on gpu:7 ended %q, want [ERROR]", out.Terminator())
	}
	if !strings.Contains(out.Error, `"gpu:7"`) || !strings.Contains(out.Error, hive) {
		t.Fatalf("spawn on gpu:7: error %q does not name the device and the hive", out.Error)
	}
	list := suite.ProcessList(t, q, &hist, hive)
	if len(list) != 1 || list[0].WorkerID != w.WorkerID {
		t.Fatalf("after the refused spawn the hive lists %+v; want only %s", list, w.WorkerID)
	}
	suite.NothingLost(t, 30*time.Second, q, &hist)
}
