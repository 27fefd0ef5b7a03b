//go:build docker

package lifecycle

import (
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// hiveBinary is binary_path of hive-localhost in configs/localhost/hives.conf,
// expanded for the rbee user.
const hiveBinary = "/home/rbee/.local/bin/rbee-hive"

// hive_uninstall of a running hive stops it (its recorded pid is gone, /health
// refuses, the registry says offline) and removes its binary from the hive's
// disk; a second uninstall finds nothing to remove, and hive_start then says
// the hive is not installed.
func TestHiveUninstallViaQueen(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.Localhost)
	q := h.MustQueen(t)
	ctx := suite.Context(t, 4*opTimeout)
	if err := checks.AwaitHiveState(ctx, q, hive, api.HiveOnline, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	hivePid := recordedPid(t, h)
	if hivePid == 0 {
		t.Fatal("the autostarted hive recorded no pid")
	}
	if st, err := procState(ctx, h, hivePid); err != nil || !running(st, "rbee-hive") {
		t.Fatalf("recorded pid %d before hive_uninstall: %q, %v; want a running rbee-hive", hivePid, st, err)
	}
	if r := h.MustExec(t, hive, []string{"test", "-f", hiveBinary}); r.ExitCode != 0 {
		t.Fatalf("%s is not on %s before hive_uninstall (test -f: exit %d)", hiveBinary, hive, r.ExitCode)
	}

	var hist checks.History
	res := suite.Result[api.HiveUninstallResult](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveUninstall, Alias: hive})
	if res.Alias != hive || res.BinaryPath != "~/.local/bin/rbee-hive" || !res.Removed {
		t.Fatalf("hive_uninstall result %+v; want alias %s, binary_path ~/.local/bin/rbee-hive, removed", res, hive)
	}
	// The effect on the hive machine: no binary, no daemon.
	if r := h.MustExec(t, hive, []string{"sh", "-c", "ls -la " + hiveBinary + " 2>&1; test ! -e " + hiveBinary}); r.ExitCode != 0 {
		t.Errorf("%s is still on %s after hive_uninstall reported it removed: %s", hiveBinary, hive, r.Stdout)
	}
	awaitGone(t, h, hivePid, 10*time.Second)
	if code := curlExit(t, h); code != 7 {
		t.Errorf("hive /health from the queen after hive_uninstall: curl exit %d; want 7 (connection refused)", code)
	}
	if row, err := checks.Hive(ctx, q, hive); err != nil || row.State != api.HiveOffline {
		t.Errorf("GET /v1/hives after hive_uninstall: %+v, %v; want offline", row, err)
	}

	// Negative control: nothing is left to remove, and the result says so.
	again := suite.Result[api.HiveUninstallResult](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveUninstall, Alias: hive})
	if again.Alias != hive || again.Removed {
		t.Errorf("second hive_uninstall result %+v; want removed false", again)
	}
	// Without a binary the hive cannot be started again.
	suite.MustError(t, suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStart, Alias: hive}), "not installed")
}
