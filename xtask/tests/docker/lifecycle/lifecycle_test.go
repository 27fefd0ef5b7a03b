//go:build docker

package lifecycle

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// hive_start on a hive whose binary is installed but not running: it becomes healthy, its pid is recorded and the queen fetched its capabilities.
func TestHiveStartViaQueen(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.Localhost, integration.WithEnv(map[string]string{"RBEE_HIVE_AUTOSTART": "0", "RBEE_GPUS": "1"}))
	q := h.MustQueen(t)
	var hist checks.History
	hc, err := h.Hive(hive)
	if err != nil {
		t.Fatal(err)
	}
	if code := curlExit(t, h); code != 7 {
		t.Fatalf("hive /health from the queen before hive_start: curl exit %d; want 7 (connection refused)", code)
	}
	if pid := recordedPid(t, h); pid != 0 {
		t.Fatalf("pid file holds %d before hive_start", pid)
	}
	if row, err := checks.Hive(t.Context(), q, hive); err != nil || len(row.Devices) != 0 {
		t.Fatalf("registry before hive_start: %+v, %v; want no devices yet", row, err)
	}

	res := suite.Result[api.HiveStartResult](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStart, Alias: hive})
	if res.Alias != hive || res.State != api.HiveOnline || res.PID <= 0 {
		t.Fatalf("hive_start result %+v; want alias %s, state online, a pid", res, hive)
	}
	wantDevices(t, "hive_start result", res.Devices, 1)

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if body, err := hc.Health(ctx); err != nil || strings.TrimSpace(body) != "ok" {
		t.Fatalf("hive /health after hive_start: %q, %v; want ok", body, err)
	}
	if pid := recordedPid(t, h); pid != res.PID {
		t.Errorf("pid file holds %d; hive_start reported %d", pid, res.PID)
	}
	st, err := procState(ctx, h, res.PID)
	if err != nil || !running(st, "rbee-hive") {
		t.Errorf("recorded pid %d on the hive: %q, %v; want a running rbee-hive", res.PID, st, err)
	}
	owner := strings.TrimSpace(suite.Sh(t, h, hive, fmt.Sprintf("stat -c %%U /proc/%d", res.PID)))
	if owner != "rbee" {
		t.Errorf("pid %d runs as %q; want rbee (the SSH user)", res.PID, owner)
	}
	row, err := checks.Hive(ctx, q, hive)
	if err != nil {
		t.Fatal(err)
	}
	if row.State != api.HiveOnline {
		t.Errorf("GET /v1/hives: %s is %s; want online", hive, row.State)
	}
	wantDevices(t, "GET /v1/hives after hive_start", row.Devices, 1)
	suite.NothingLost(t, time.Minute, q, &hist)
}

// hive_stop stops exactly the recorded hive: /health refuses, the process is gone, and decoys whose names contain rbee-hive still run.
func TestHiveStopViaQueen(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.Localhost)
	q := h.MustQueen(t)
	var hist checks.History
	hivePid := recordedPid(t, h)
	if hivePid == 0 {
		t.Fatal("the autostarted hive recorded no pid")
	}
	// Two decoys as rbee: a copy of sleep named rbee-hive-decoy (pkill
	// rbee-hive would match its name) and a sleep whose argv[0] is
	// rbee-hive (pkill -f rbee-hive would match its command line).
	decoys := map[string]int{}
	for name, script := range map[string]string{
		"rbee-hive-decoy":  `cp /bin/sleep ~/.local/bin/rbee-hive-decoy && nohup ~/.local/bin/rbee-hive-decoy 600 >/dev/null 2>&1 </dev/null & echo $!`,
		"rbee-hive (argv)": `nohup bash -c 'exec -a rbee-hive sleep 601' >/dev/null 2>&1 </dev/null & echo $!`,
	} {
		pid, err := strconv.Atoi(strings.TrimSpace(suite.Sh(t, h, hive, script, integration.AsUser("rbee"))))
		if err != nil {
			t.Fatal(err)
		}
		decoys[name] = pid
	}
	// This context bounds the checks of the whole test, three hive
	// operations included: one operation's bound each, not a minute.
	ctx, cancel := context.WithTimeout(t.Context(), 4*opTimeout)
	defer cancel()
	for name, pid := range decoys {
		if err := checks.Await(ctx, 10*time.Second, "decoy "+name+" running", func(ctx context.Context) (bool, string, error) {
			s, err := procState(ctx, h, pid)
			return running(s, "rbee-hive"), s, err
		}); err != nil {
			t.Fatal(err)
		}
	}

	res := suite.Result[api.HiveStopResult](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStop, Alias: hive})
	if res.Alias != hive || res.State != api.HiveOffline {
		t.Fatalf("hive_stop result %+v; want alias %s, state offline", res, hive)
	}
	if code := curlExit(t, h); code != 7 {
		t.Errorf("hive /health from the queen after hive_stop: curl exit %d; want 7 (connection refused)", code)
	}
	awaitGone(t, h, hivePid, 10*time.Second)
	for name, pid := range decoys {
		if s, err := procState(ctx, h, pid); err != nil || !running(s, "rbee-hive") {
			t.Errorf("decoy %s (pid %d) after hive_stop: %q, %v; want still running", name, pid, s, err)
		}
	}
	if row, err := checks.Hive(ctx, q, hive); err != nil || row.State != api.HiveOffline {
		t.Errorf("GET /v1/hives after hive_stop: %+v, %v; want offline", row, err)
	}

	// A hung hive (SIGSTOP) cannot answer /v1/shutdown, so the queen must
	// fall back to signalling over SSH: still only the recorded pid.
	started := suite.Result[api.HiveStartResult](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStart, Alias: hive})
	suite.Sh(t, h, hive, fmt.Sprintf("kill -STOP %d", started.PID))
	o := suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStop, Alias: hive})
	if o.Kind.String() != api.TermDone {
		t.Fatalf("hive_stop of a hung hive ended %s", o.Terminator())
	}
	signalled := false
	var msgs []string
	for _, n := range suite.Narrations(t, o) {
		msgs = append(msgs, n.Message)
		signalled = signalled || strings.Contains(n.Message, fmt.Sprintf("stopped %s: pid and signal %d", hive, started.PID))
	}
	if !signalled {
		t.Errorf("hive_stop of a hung hive: no narration says pid %d was signalled: %q", started.PID, msgs)
	}
	awaitGone(t, h, started.PID, 10*time.Second)
	for name, pid := range decoys {
		if s, err := procState(ctx, h, pid); err != nil || !running(s, "rbee-hive") {
			t.Errorf("decoy %s (pid %d) after hive_stop of a hung hive: %q, %v; want still running", name, pid, s, err)
		}
	}
	suite.NothingLost(t, time.Minute, q, &hist)
}

// Stop then start: a new pid, healthy, and heartbeats reach the queen again.
func TestHiveRestart(t *testing.T) {
	t.Parallel()
	const interval = 300 * time.Millisecond
	h := integration.Start(t, integration.Localhost, integration.WithEnv(map[string]string{"RBEE_HEARTBEAT_INTERVAL": interval.String()}))
	q := h.MustQueen(t)
	var hist checks.History
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := checks.AwaitHiveState(ctx, q, hive, api.HiveOnline, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	oldPid := recordedPid(t, h)

	suite.Result[api.HiveStopResult](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStop, Alias: hive})
	awaitGone(t, h, oldPid, 10*time.Second)
	res := suite.Result[api.HiveStartResult](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStart, Alias: hive})
	if res.PID <= 0 || res.PID == oldPid {
		t.Fatalf("hive_start after hive_stop reported pid %d; want a new pid (old %d)", res.PID, oldPid)
	}
	if pid := recordedPid(t, h); pid != res.PID {
		t.Errorf("pid file holds %d; hive_start reported %d", pid, res.PID)
	}
	hc, err := h.Hive(hive)
	if err != nil {
		t.Fatal(err)
	}
	if body, err := hc.Health(ctx); err != nil || strings.TrimSpace(body) != "ok" {
		t.Fatalf("hive /health after restart: %q, %v; want ok", body, err)
	}

	// hive_start itself marks the hive seen once; only heartbeats move
	// last_seen on after that. Two advances = two heartbeats.
	row, err := checks.Hive(ctx, q, hive)
	if err != nil || row.LastSeen == nil {
		t.Fatalf("registry after restart: %+v, %v", row, err)
	}
	last := *row.LastSeen
	for i := 1; i <= 2; i++ {
		err := checks.Await(ctx, 10*interval+5*time.Second, fmt.Sprintf("heartbeat %d after the restart", i), func(ctx context.Context) (bool, string, error) {
			r, err := checks.Hive(ctx, q, hive)
			if err != nil {
				return false, "", err
			}
			if r.LastSeen == nil {
				return false, "no last_seen", nil
			}
			if r.LastSeen.Before(last) {
				return false, "", fmt.Errorf("last_seen went backwards: %s after %s", r.LastSeen, last)
			}
			if r.State == api.HiveOnline && r.LastSeen.After(last) {
				last = *r.LastSeen
				return true, "", nil
			}
			return false, fmt.Sprintf("%s, last_seen %s", r.State, r.LastSeen.Format(time.RFC3339Nano)), nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	suite.NothingLost(t, time.Minute, q, &hist)
}

// hive_status reports online, unreachable (container paused) and offline (daemon stopped), each within the queen's HTTP timeout.
func TestHiveStatus(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.Localhost)
	q := h.MustQueen(t)
	var hist checks.History
	// Every answer must come within the probe's bound (the [http] timeout);
	// the margin covers job start-up on a loaded 2-core machine.
	const bound = httpTimeout + 7*time.Second
	status := func(want, probe string) {
		t.Helper()
		t0 := time.Now()
		res := suite.Result[api.HiveStatus](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStatus, Alias: hive})
		d := time.Since(t0)
		if res.Alias != hive || res.State != want || res.Probe != probe {
			t.Errorf("hive_status: state %s, probe %q; want %s, %q", res.State, res.Probe, want, probe)
		}
		if d > bound {
			t.Errorf("hive_status (%s) took %v; want within %v", want, d, bound)
		}
	}
	status(api.HiveOnline, "ok")

	h.MustPause(t, hive)
	paused := true
	t.Cleanup(func() {
		if paused {
			_ = h.Unpause(context.Background(), hive)
		}
	})
	status(api.HiveUnreachable, "timeout")
	h.MustUnpause(t, hive)
	paused = false
	status(api.HiveOnline, "ok")

	suite.Result[api.HiveStopResult](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStop, Alias: hive})
	status(api.HiveOffline, "connection refused")
	suite.NothingLost(t, time.Minute, q, &hist)
}

// A hive restarted out of band with another number of simulated GPUs while its heartbeats cannot reach the queen: GET /v1/hives keeps the old devices until hive_refresh_capabilities, which asks the hive and shows the new set; GET /v1/hives then agrees.
func TestCapabilitiesRefresh(t *testing.T) {
	t.Parallel()
	const interval = 500 * time.Millisecond
	h := integration.Start(t, integration.Localhost, integration.WithEnv(map[string]string{"RBEE_GPUS": "2", "RBEE_HEARTBEAT_INTERVAL": interval.String()}))
	q := h.MustQueen(t)
	var hist checks.History
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	refresh := func() api.Capabilities {
		t.Helper()
		caps := suite.Result[api.Capabilities](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveRefreshCapabilities, Alias: hive})
		if caps.HiveID != hive {
			t.Errorf("capabilities of hive %q; want %s", caps.HiveID, hive)
		}
		return caps
	}
	registry := func() []api.Device {
		t.Helper()
		row, err := checks.Hive(ctx, q, hive)
		if err != nil {
			t.Fatal(err)
		}
		return row.Devices
	}
	wantDevices(t, "refresh with RBEE_GPUS=2", refresh().Devices, 2)
	wantDevices(t, "GET /v1/hives with RBEE_GPUS=2", registry(), 2)

	// The machine's settings change; the running hive does not notice.
	suite.Sh(t, h, hive, `sed -i 's/^gpus = .*/gpus = 3/' `+hiveToml+` && grep -qx 'gpus = 3' `+hiveToml, integration.AsUser("rbee"))
	wantDevices(t, "refresh before the restart", refresh().Devices, 2)

	// Heartbeats (which carry devices) cannot reach the queen, and the
	// daemon restarts behind the queen's back: no hive_start fetch either.
	h.MustInject(t, integration.Block(hive, "queen"))
	suite.RestartHiveDaemon(t, h, hive)
	wantDevices(t, "the restarted hive's own GET /capabilities", suite.HiveCapabilities(t, h, hive).Devices, 3)
	// For many intervals the registry keeps what it had: without the cut,
	// the new daemon's first heartbeat would have changed it.
	watchUntil := time.Now().Add(10 * interval)
	for time.Now().Before(watchUntil) {
		wantDevices(t, "GET /v1/hives after the out-of-band restart, before the refresh", registry(), 2)
		time.Sleep(checks.PollInterval) // watching that a state holds over a window, not waiting for one
	}

	caps := refresh()
	wantDevices(t, "refresh after the restart with gpus = 3", caps.Devices, 3)
	if got, want := deviceIDs(registry()), deviceIDs(caps.Devices); !slices.Equal(got, want) {
		t.Errorf("GET /v1/hives devices after the refresh %v; want %v", got, want)
	}
	suite.NothingLost(t, time.Minute, q, &hist)
}
