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

// hive_stop of a hung hive falls back to SSH; with another machine's key pinned for the hive the queen refuses the connection ([ERROR] host key mismatch) and signals nothing, and with the right known_hosts it kills the recorded pid.
func TestHiveStopRefusesMismatchedHostKey(t *testing.T) {
	t.Parallel()
	// The queen reads known_hosts anew for every connection, from a file
	// the test can replace (WithFile mounts are read-only).
	const knownHosts = "/tmp/rbee-ssh/known_hosts"
	keyOf := map[string]string{}
	suite.KnownHosts(t, func(name, typ, key string) string { keyOf[name] = typ + " " + key; return "" })
	// hive-1's key pinned for the hive; the hive's own key stays in the
	// file under hive-1's name.
	swapped := suite.KnownHosts(t, func(name, typ, key string) string {
		switch name {
		case hive:
			return name + " " + keyOf["hive-1"]
		case "hive-1":
			return name + " " + keyOf[hive]
		}
		return name + " " + typ + " " + key
	})
	// The queen checks known_hosts at start-up: the file exists from the
	// start, writable, so the right one can be swapped in later.
	h := integration.Start(t, integration.Localhost,
		integration.WithFile("queen", "/etc/rbee/queen.toml", suite.QueenConfig(t, "localhost", map[string]string{
			"known_hosts": strconv.Quote(knownHosts),
		})),
		integration.WithWritableFile("queen", knownHosts, swapped))
	q := h.MustQueen(t)
	var hist checks.History

	pid := recordedPid(t, h)
	if pid == 0 {
		t.Fatal("the autostarted hive recorded no pid")
	}
	// A hung hive (SIGSTOP) cannot answer /v1/shutdown, so hive_stop must
	// signal its recorded pid over SSH.
	suite.Sh(t, h, hive, fmt.Sprintf("kill -STOP %d", pid))
	o := suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStop, Alias: hive})
	suite.MustError(t, o, hive, "host key mismatch", `"`+hive+`"`)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := procState(ctx, h, pid)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s, "T ") || !strings.Contains(s, "rbee-hive") {
		t.Errorf("hive pid %d after the refused hive_stop: %q; want it still there, stopped (T), not signalled", pid, s)
	}
	if got := recordedPid(t, h); got != pid {
		t.Errorf("pid file holds %d after the refused hive_stop; want %d untouched", got, pid)
	}

	// Negative control: the right known_hosts, the same hung hive.
	suite.PutFile(t, h, "queen", knownHosts, suite.RepoFile(t, "keys/known_hosts"))
	o = suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStop, Alias: hive})
	suite.MustDone(t, o)
	awaitGone(t, h, pid, 30*time.Second)
	if got := recordedPid(t, h); got != 0 {
		t.Errorf("pid file holds %d after hive_stop; want it removed", got)
	}
	if row, err := checks.Hive(ctx, q, hive); err != nil || row.State != api.HiveOffline {
		t.Errorf("GET /v1/hives after hive_stop: %+v, %v; want offline", row, err)
	}
	suite.NothingLost(t, time.Minute, q, &hist)
}
