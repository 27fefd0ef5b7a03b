//go:build docker

package workerlifecycle

import (
	"encoding/json"
	"fmt"
	"strconv"
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
	hive     = "hive-1"
	hivePort = 9000
	// opTimeout bounds one job through the queen (download, spawn, list);
	// generous because other suites may share the two cores.
	opTimeout = 60 * time.Second
)

// workerHealth asks a worker's /health from inside the topology network (the
// queen's container), at the URL the hive advertised: what the queen itself
// would reach.
func workerHealth(t *testing.T, h *integration.Harness, url string) (api.WorkerHealth, error) {
	t.Helper()
	r := h.MustExec(t, "queen", []string{"curl", "-sS", "-f", "-m", "5", url + "/health"})
	if r.ExitCode != 0 {
		return api.WorkerHealth{}, fmt.Errorf("curl %s/health from the queen's container: exit %d: %s", url, r.ExitCode, strings.TrimSpace(r.Stderr))
	}
	var wh api.WorkerHealth
	if err := json.Unmarshal([]byte(r.Stdout), &wh); err != nil {
		return wh, fmt.Errorf("worker /health %q: %v", r.Stdout, err)
	}
	return wh, nil
}

// procState is the state letter of pid in svc's /proc ("R", "S", "Z" …), or
// "" when there is no such process.
func procState(t *testing.T, h *integration.Harness, svc string, pid int) string {
	t.Helper()
	r := h.MustExec(t, svc, []string{"ps", "-o", "stat=", "-p", strconv.Itoa(pid)})
	if r.ExitCode != 0 {
		return ""
	}
	return strings.TrimSpace(r.Stdout)
}

// procCmdline is pid's command line in svc (arguments joined by spaces).
func procCmdline(t *testing.T, h *integration.Harness, svc string, pid int) string {
	t.Helper()
	r := h.MustExec(t, svc, []string{"sh", "-c", fmt.Sprintf("tr '\\0' ' ' < /proc/%d/cmdline", pid)})
	return strings.TrimSpace(r.Stdout)
}

// alive reports whether pid runs in svc and is not a zombie.
func alive(t *testing.T, h *integration.Harness, svc string, pid int) bool {
	st := procState(t, h, svc, pid)
	return st != "" && !strings.HasPrefix(st, "Z")
}

func itoa(n int) string { return strconv.Itoa(n) }

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func containsWorker(ws []api.WorkerProcess, id string, pid int) bool {
	for _, w := range ws {
		if w.WorkerID == id && w.PID == pid && w.State == "running" {
			return true
		}
	}
	return false
}

// gpus gives hive-1 n simulated GPUs (0: none, stated explicitly).
func gpus(n int) integration.Option {
	return integration.WithEnv(map[string]string{"RBEE_GPUS": strconv.Itoa(n)})
}

// downloadedModel starts hive-1 without GPUs and downloads model onto it
// through hist: the prologue of the tests that then damage the model's
// file on the hive. It fails unless the download names a path and a file
// of at least 64 bytes (a payload to damage in the middle).
func downloadedModel(t *testing.T, hist *checks.History, model string) (*integration.Harness, *client.Client, api.Model) {
	t.Helper()
	h, q := suite.StartHive(t, gpus(0))
	m := suite.Download(t, q, hist, hive, model)
	if m.Path == "" || m.Size < 64 {
		t.Fatalf("model_download result %+v; want a path and a model file", m)
	}
	return h, q, m
}
