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
)

const (
	hive      = "hive-localhost"                             // the localhost topology's hive (service and alias)
	pidFile   = "/home/rbee/.local/state/rbee/rbee-hive.pid" // written by hive_start and the entrypoint
	hiveToml  = "/home/rbee/.config/rbee/hive.toml"          // the hive machine's own settings
	opTimeout = 90 * time.Second                             // bound for any single queen operation
	// httpTimeout is [http] timeout in configs/localhost/queen.toml: the
	// queen's health probe never waits longer.
	httpTimeout = 3 * time.Second
)

// recordedPid reads the hive's pid file; 0 when there is none.
func recordedPid(t testing.TB, h *integration.Harness) int {
	t.Helper()
	r := h.MustExec(t, hive, []string{"cat", pidFile})
	if r.ExitCode != 0 {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(r.Stdout))
	if err != nil {
		t.Fatalf("%s holds %q", pidFile, r.Stdout)
	}
	return pid
}

// procState says what the hive's kernel knows of pid: "gone", or its state
// letter (R, S, Z, …) and command line.
func procState(ctx context.Context, h *integration.Harness, pid int) (string, error) {
	script := fmt.Sprintf(`[ -e /proc/%[1]d ] || { echo gone; exit 0; }; s=$(sed 's/.*) //' /proc/%[1]d/stat | cut -c1); echo "$s $(tr '\0' ' ' < /proc/%[1]d/cmdline)"`, pid)
	r, err := h.Exec(ctx, hive, []string{"sh", "-c", script})
	if err != nil {
		return "", err
	}
	if r.ExitCode != 0 {
		return "", fmt.Errorf("reading /proc/%d: exit %d: %s", pid, r.ExitCode, r.Stderr)
	}
	return strings.TrimSpace(r.Stdout), nil
}

// running reports whether procState describes a live (not exited, not
// zombie) process whose command line contains want.
func running(state, want string) bool {
	return state != "gone" && !strings.HasPrefix(state, "Z ") && strings.Contains(state, want)
}

// awaitGone waits until pid has exited (and been reaped, or is a zombie).
func awaitGone(t testing.TB, h *integration.Harness, pid int, timeout time.Duration) {
	t.Helper()
	err := checks.Await(t.Context(), timeout, fmt.Sprintf("pid %d gone from the hive", pid), func(ctx context.Context) (bool, string, error) {
		s, err := procState(ctx, h, pid)
		return s == "gone" || strings.HasPrefix(s, "Z "), fmt.Sprintf("pid %d: %s", pid, s), err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// deviceIDs lists device ids in order.
func deviceIDs(ds []api.Device) []string {
	ids := make([]string, 0, len(ds))
	for _, d := range ds {
		ids = append(ids, d.ID)
	}
	return ids
}

// wantDevices checks a device list is CPU-0 plus gpus simulated GPUs.
func wantDevices(t testing.TB, where string, ds []api.Device, gpus int) {
	t.Helper()
	want := []string{"CPU-0"}
	for i := range gpus {
		want = append(want, fmt.Sprintf("GPU-%d", i))
	}
	got := deviceIDs(ds)
	if !slices.Equal(got, want) {
		t.Fatalf("%s: devices %v; want %v", where, got, want)
	}
	for _, d := range ds {
		if d.Simulated != (d.DeviceType == "gpu") {
			t.Errorf("%s: device %s (%s) simulated=%v; want only GPUs simulated", where, d.ID, d.DeviceType, d.Simulated)
		}
	}
}

// curlExit is curl's exit code fetching the hive's /health from inside the
// queen's container (0 ok, 7 connection refused, 28 timeout).
func curlExit(t testing.TB, h *integration.Harness) int {
	t.Helper()
	return h.MustExec(t, "queen", []string{"curl", "-fsS", "-o", "/dev/null", "-m", "3", "http://" + hive + ":9000/health"}).ExitCode
}
