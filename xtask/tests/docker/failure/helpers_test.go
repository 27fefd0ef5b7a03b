//go:build docker

package failure

import (
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
	hive      = "hive-1"
	hivePort  = 9000
	modelsDir = "/home/rbee/.local/share/rbee/models"
	// opTimeout bounds one job through the queen; generous because other
	// suites may share the two cores.
	opTimeout = 90 * time.Second
	// stateTimeout bounds waiting for a registry state (heartbeat every
	// 500 ms, stale_after 3 s in configs/full-stack/queen.toml).
	stateTimeout = 30 * time.Second
)

func awaitHive(t *testing.T, q *client.Client, alias, state string) {
	t.Helper()
	if err := checks.AwaitHiveState(t.Context(), q, alias, state, stateTimeout); err != nil {
		t.Fatal(err)
	}
}

func awaitWorker(t *testing.T, q *client.Client, id, what string, pred func(api.WorkerInfo) bool) api.WorkerInfo {
	t.Helper()
	w, err := checks.AwaitWorker(t.Context(), q, id, stateTimeout, what, pred)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func modelList(t *testing.T, q *client.Client, hist *checks.History) []api.Model {
	t.Helper()
	return suite.Result[api.ModelList](t, opTimeout, q, hist, api.JobRequest{Operation: api.OpModelList, HiveID: hive}).Models
}

// inferReq is a short, seeded inference for model (on any hive).
func inferReq(model string) api.JobRequest {
	seed := uint64(7)
	return api.JobRequest{Operation: api.OpInfer, Model: model, Prompt: "Alice was", MaxTokens: 8, Seed: &seed}
}

// procState is pid's state letters in svc ("S", "Z" …), "" if there is none.
func procState(t *testing.T, h *integration.Harness, svc string, pid int) string {
	t.Helper()
	r := h.MustExec(t, svc, []string{"ps", "-o", "stat=", "-p", strconv.Itoa(pid)})
	if r.ExitCode != 0 {
		return ""
	}
	return strings.TrimSpace(r.Stdout)
}

// alive reports whether pid runs in svc and is not a zombie.
func alive(t *testing.T, h *integration.Harness, svc string, pid int) bool {
	t.Helper()
	st := procState(t, h, svc, pid)
	return st != "" && !strings.HasPrefix(st, "Z")
}

// hivePID is the pid in svc's hive pid file (written by the container
// entrypoint or hive_start), checked to be a live rbee-hive.
func hivePID(t *testing.T, h *integration.Harness, svc string) int {
	t.Helper()
	r := h.MustExec(t, svc, []string{"cat", suite.HivePIDFile})
	pid, err := strconv.Atoi(strings.TrimSpace(r.Stdout))
	if err != nil || pid <= 0 {
		t.Fatalf("%s: pid file %s holds %q (exit %d)", svc, suite.HivePIDFile, r.Stdout, r.ExitCode)
	}
	cmd := h.MustExec(t, svc, []string{"cat", fmt.Sprintf("/proc/%d/comm", pid)})
	if strings.TrimSpace(cmd.Stdout) != "rbee-hive" {
		t.Fatalf("%s: pid %d from the pid file is %q, not rbee-hive", svc, pid, strings.TrimSpace(cmd.Stdout))
	}
	return pid
}

// sha256In is the sha256 of file in svc, "" if it cannot be read.
func sha256In(t *testing.T, h *integration.Harness, svc, file string) string {
	t.Helper()
	r := h.MustExec(t, svc, []string{"sha256sum", file})
	if r.ExitCode != 0 {
		return ""
	}
	return strings.Fields(r.Stdout)[0]
}
