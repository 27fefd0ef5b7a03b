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

// hive_stop signals only a recorded pid that is still rbee-hive: with the pid file naming another live process of the rbee account (a reused pid), it ends [ERROR] "not rbee-hive", kills nothing and removes the stale file.
func TestHiveStopSparesReusedPid(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.Localhost)
	q := h.MustQueen(t)
	var hist checks.History
	ctx := suite.Context(t, 4*time.Minute)

	real := recordedPid(t, h)
	if real == 0 {
		t.Fatal("the autostarted hive recorded no pid")
	}
	// A hung hive cannot answer /v1/shutdown, so hive_stop falls back to
	// the pid file over SSH. The decoy starts before the pid file is
	// rewritten, so only the command-line check can tell it apart.
	suite.Sh(t, h, hive, fmt.Sprintf("kill -STOP %d", real))
	t.Cleanup(func() { _, _ = h.Exec(context.Background(), hive, []string{"kill", "-CONT", strconv.Itoa(real)}) })
	out := suite.Sh(t, h, hive, fmt.Sprintf(
		`setpriv --reuid=rbee --regid=rbee --init-groups sh -c 'sleep 600 >/dev/null 2>&1 & echo $!' && sleep 1.1`))
	decoy, err := strconv.Atoi(strings.TrimSpace(strings.Split(strings.TrimSpace(out), "\n")[0]))
	if err != nil || decoy <= 0 {
		t.Fatalf("starting the decoy: %q", out)
	}
	suite.Sh(t, h, hive, fmt.Sprintf("setpriv --reuid=rbee --regid=rbee --init-groups sh -c 'echo %d > %s'", decoy, pidFile))

	o := suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStop, Alias: hive})
	suite.MustError(t, o, hive, strconv.Itoa(decoy), "not rbee-hive")

	s, err := procState(ctx, h, decoy)
	if err != nil {
		t.Fatal(err)
	}
	if !running(s, "sleep 600") {
		t.Errorf("decoy pid %d after hive_stop: %q; want it still running (not signalled)", decoy, s)
	}
	if s, err = procState(ctx, h, real); err != nil {
		t.Fatal(err)
	} else if !strings.HasPrefix(s, "T ") || !strings.Contains(s, "rbee-hive") {
		t.Errorf("the real hive, pid %d, after hive_stop: %q; want it untouched (still stopped, T)", real, s)
	}
	if got := recordedPid(t, h); got != 0 {
		t.Errorf("pid file holds %d after the refused hive_stop; want the stale file removed", got)
	}
	suite.NothingLost(t, time.Minute, q, &hist)
}
