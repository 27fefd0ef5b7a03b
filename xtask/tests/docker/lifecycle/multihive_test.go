//go:build docker

package lifecycle

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// pidOn reads the pid file of the hive daemon on svc's machine; 0 when there is none.
func pidOn(t testing.TB, h *integration.Harness, svc string) int {
	t.Helper()
	r := h.MustExec(t, svc, []string{"cat", pidFile})
	if r.ExitCode != 0 {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(r.Stdout))
	if err != nil {
		t.Fatalf("%s on %s holds %q", pidFile, svc, r.Stdout)
	}
	return pid
}

// aliveOn reports whether pid runs on svc's machine as rbee-hive (not a zombie).
func aliveOn(t testing.TB, h *integration.Harness, svc string, pid int) bool {
	t.Helper()
	r := h.MustExec(t, svc, []string{"sh", "-c", fmt.Sprintf(`s=$(sed 's/.*) //' /proc/%[1]d/stat | cut -c1) && [ "$s" != Z ] && tr '\0' ' ' < /proc/%[1]d/cmdline`, pid)})
	return r.ExitCode == 0 && strings.Contains(r.Stdout, "rbee-hive")
}

// healthExit is curl's exit code for svc's hive /health, asked from the
// queen's container (0 answered, 7 refused).
func healthExit(t testing.TB, h *integration.Harness, svc string) int {
	t.Helper()
	return h.MustExec(t, "queen", []string{"curl", "-fsS", "-o", "/dev/null", "-m", "3", "http://" + svc + ":9000/health"}).ExitCode
}

// hive_stop of hive-2 (the second hive in hives.conf) stops hive-2's daemon
// and nothing on hive-1: hive-1 keeps its pid, answers, stays online with
// last_seen advancing, and hive_status tells the two apart; hive_start of hive-2 brings it back under a new pid,
// still without touching hive-1.
func TestHiveStopOneOfTwo(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.MultiHive)
	q := h.MustQueen(t)
	var hist checks.History
	ctx := suite.Context(t, 3*time.Minute)
	for _, hv := range []string{"hive-1", "hive-2"} {
		if err := checks.AwaitHiveState(ctx, q, hv, api.HiveOnline, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	pid1, pid2 := pidOn(t, h, "hive-1"), pidOn(t, h, "hive-2")
	if pid1 == 0 || pid2 == 0 {
		t.Fatalf("autostarted hives recorded pids %d and %d", pid1, pid2)
	}

	res := suite.Result[api.HiveStopResult](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStop, Alias: "hive-2"})
	if res.Alias != "hive-2" || res.State != api.HiveOffline {
		t.Fatalf("hive_stop hive-2 result %+v; want alias hive-2, offline", res)
	}
	if err := checks.Await(ctx, 10*time.Second, "hive-2's daemon gone", func(context.Context) (bool, string, error) {
		return !aliveOn(t, h, "hive-2", pid2), fmt.Sprintf("pid %d still runs on hive-2", pid2), nil
	}); err != nil {
		t.Fatal(err)
	}
	if code := healthExit(t, h, "hive-2"); code != 7 {
		t.Errorf("hive-2 /health after hive_stop: curl exit %d; want 7 (refused)", code)
	}
	if row, err := checks.Hive(ctx, q, "hive-2"); err != nil || row.State != api.HiveOffline {
		t.Errorf("GET /v1/hives hive-2 after hive_stop: %+v, %v; want offline", row, err)
	}
	// hive_status probes each hive by its own address.
	for alias, want := range map[string]string{"hive-1": api.HiveOnline, "hive-2": api.HiveOffline} {
		st := suite.Result[api.HiveStatus](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStatus, Alias: alias})
		if st.Alias != alias || st.State != want {
			t.Errorf("hive_status %s with hive-2 stopped: alias %q state %q probe %q; want %s", alias, st.Alias, st.State, st.Probe, want)
		}
	}
	assertHive1Untouched(ctx, t, h, pid1)

	st := suite.Result[api.HiveStartResult](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStart, Alias: "hive-2"})
	if st.Alias != "hive-2" || st.State != api.HiveOnline || st.PID <= 0 || st.PID == pid2 {
		t.Fatalf("hive_start hive-2 result %+v; want online with a new pid (old %d)", st, pid2)
	}
	if got := pidOn(t, h, "hive-2"); got != st.PID || !aliveOn(t, h, "hive-2", got) {
		t.Errorf("hive-2 pid file holds %d (running %v); hive_start reported %d", got, aliveOn(t, h, "hive-2", got), st.PID)
	}
	if err := checks.AwaitHiveState(ctx, q, "hive-2", api.HiveOnline, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	assertHive1Untouched(ctx, t, h, pid1)
	suite.NothingLost(t, time.Minute, q, &hist)
}

// assertHive1Untouched checks that hive-1's daemon still runs under pid,
// answers, and is online with last_seen advancing (a fresh heartbeat since
// this call began).
func assertHive1Untouched(ctx context.Context, t *testing.T, h *integration.Harness, pid int) {
	t.Helper()
	q := h.MustQueen(t)
	if got := pidOn(t, h, "hive-1"); got != pid || !aliveOn(t, h, "hive-1", pid) {
		t.Fatalf("hive-1's daemon: pid file %d (was %d), running %v; hive_stop of hive-2 must not touch it", got, pid, aliveOn(t, h, "hive-1", pid))
	}
	if code := healthExit(t, h, "hive-1"); code != 0 {
		t.Fatalf("hive-1 /health: curl exit %d; want an answer", code)
	}
	since := time.Now()
	if err := checks.Await(ctx, 30*time.Second, "hive-1 online with a new heartbeat", func(ctx context.Context) (bool, string, error) {
		row, err := checks.Hive(ctx, q, "hive-1")
		if err != nil || row.LastSeen == nil {
			return false, "", err
		}
		return row.State == api.HiveOnline && row.LastSeen.After(since), fmt.Sprintf("hive-1 %s, last_seen %s", row.State, row.LastSeen.Format(time.RFC3339Nano)), nil
	}); err != nil {
		t.Fatal(err)
	}
}
