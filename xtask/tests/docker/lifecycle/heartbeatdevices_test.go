//go:build docker

package lifecycle

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// A hive's devices reach the queen by its heartbeats alone: a freshly
// started queen that cannot open a connection to the hive (so it cannot
// ask GET /capabilities) and gets no heartbeat has no devices for it; once
// the hive's heartbeats get through, GET /v1/hives shows exactly the
// devices the hive itself reports for its configured GPUs, while the
// queen still cannot reach the hive.
func TestHeartbeatCarriesDevices(t *testing.T) {
	t.Parallel()
	const (
		gpus     = 2
		interval = 500 * time.Millisecond
	)
	h := integration.Start(t, integration.Localhost, integration.WithEnv(map[string]string{
		"RBEE_GPUS": fmt.Sprint(gpus), "RBEE_HEARTBEAT_INTERVAL": interval.String()}))
	ctx := suite.Context(t, 3*time.Minute)

	// What the hive itself answers, asked inside its machine.
	want := suite.HiveCapabilities(t, h, hive).Devices
	wantDevices(t, "the hive's own GET /capabilities", want, gpus)
	byID := func(a, b api.Device) int { return cmp.Compare(a.ID, b.ID) }
	slices.SortFunc(want, byID)

	// The queen can reach the hive only through what the hive opens: its
	// heartbeats. Those are cut too, and the queen starts afresh.
	heartbeats := integration.Block(hive, "queen")
	h.MustInject(t, integration.Block("queen", hive))
	h.MustInject(t, heartbeats)
	h.MustRestart(t, "queen")
	q := h.MustQueen(t) // after the restart: its published port may have changed
	var row api.HiveInfo
	err := checks.Await(ctx, time.Minute, "the restarted queen listing "+hive, func(ctx context.Context) (bool, string, error) {
		var err error
		row, err = checks.Hive(ctx, q, hive)
		return err == nil, fmt.Sprint(err), nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Negative control: for many heartbeat intervals, no heartbeat and so
	// no devices.
	watchUntil := time.Now().Add(10 * interval)
	for {
		if len(row.Devices) != 0 || row.LastSeen != nil {
			t.Fatalf("GET /v1/hives %s before any heartbeat reached the restarted queen: devices %v, last seen %v; want none", hive, deviceIDs(row.Devices), row.LastSeen)
		}
		if !time.Now().Before(watchUntil) {
			break
		}
		time.Sleep(checks.PollInterval) // watching that a state holds over a window, not waiting for one
		if row, err = checks.Hive(ctx, q, hive); err != nil {
			t.Fatal(err)
		}
	}

	h.MustRecover(t, heartbeats)
	err = checks.Await(ctx, 60*interval, hive+"'s devices in GET /v1/hives", func(ctx context.Context) (bool, string, error) {
		var err error
		if row, err = checks.Hive(ctx, q, hive); err != nil {
			return false, "", err
		}
		got := slices.Clone(row.Devices)
		slices.SortFunc(got, byID)
		return row.LastSeen != nil && slices.Equal(got, want), fmt.Sprintf("state %s, last seen %v, devices %+v; want %+v", row.State, row.LastSeen, got, want), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after the first heartbeats: %s %s, devices %v", hive, row.State, deviceIDs(row.Devices))

	// The devices did not come from GET /capabilities: the queen still
	// cannot ask.
	var hist checks.History
	out := suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveRefreshCapabilities, Alias: hive})
	suite.MustError(t, out, hive, "GET /capabilities", "timed out")
}
