//go:build docker

package heartbeat

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// defaultStaleAfter is PROTOCOL.md's default [heartbeat] stale_after.
const defaultStaleAfter = 30 * time.Second

// With no stale_after in queen.toml the queen's own default of 30 s applies:
// a killed worker and a crashed hive stay fresh and online until 30 s after
// their last heartbeat, and turn stale and offline within the read
// tolerance after that, by the queen's last_seen.
func TestStalenessDefault(t *testing.T) {
	t.Parallel()
	conf := regexp.MustCompile(`(?m)^stale_after\s*=.*\n`).ReplaceAll(suite.RepoFile(t, "configs/full-stack/queen.toml"), nil)
	if regexp.MustCompile(`(?m)^stale_after`).Match(conf) {
		t.Fatal("queen.toml variant still sets stale_after")
	}
	h := integration.Start(t, integration.FullStack, integration.WithServices("queen", "hive-1", "worker-1"), withInterval,
		integration.WithFile("queen", "/etc/rbee/queen.toml", conf))
	ctx := suite.Context(t, 3*time.Minute)
	q := h.MustQueen(t)
	if err := awaitAllFresh(ctx, q, []string{"worker-1"}, []string{"hive-1"}, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	h.MustKill(t, "worker-1")
	h.MustKill(t, "hive-1")
	t0 := time.Now()
	var workerSilent, hiveSilent time.Duration
	err := checks.Await(ctx, defaultStaleAfter+interval+arrivalSlack, "worker-1 stale and hive-1 offline at the default stale_after", func(ctx context.Context) (bool, string, error) {
		s, err := snapshot(ctx, q)
		if err != nil {
			return false, "", err
		}
		w, ok := s.workers["worker-1"]
		hv := s.hives["hive-1"]
		if !ok || hv.LastSeen == nil {
			return false, "", fmt.Errorf("worker-1 registered %v, hive-1 last_seen %v: both were seen before the kill", ok, hv.LastSeen)
		}
		check := func(who string, gone bool, last time.Time, silent *time.Duration) error {
			switch {
			case gone && s.after.Sub(last) < defaultStaleAfter:
				return fmt.Errorf("%s given up %v after its last heartbeat; the default stale_after is %v", who, s.after.Sub(last), defaultStaleAfter)
			case !gone && s.before.Sub(last) > defaultStaleAfter+readTolerance:
				return fmt.Errorf("%s still fresh %v after its last heartbeat; the default stale_after is %v", who, s.before.Sub(last), defaultStaleAfter)
			case gone && *silent == 0:
				*silent = s.after.Sub(last)
			}
			return nil
		}
		if err := check("worker-1", w.Stale, w.LastSeen, &workerSilent); err != nil {
			return false, "", err
		}
		if err := check("hive-1", hv.State == api.HiveOffline, *hv.LastSeen, &hiveSilent); err != nil {
			return false, "", err
		}
		return w.Stale && hv.State == api.HiveOffline, fmt.Sprintf("worker-1 stale=%v, hive-1 %s, %v after the kill", w.Stale, hv.State, s.after.Sub(t0).Round(time.Millisecond)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v after the kill: worker-1 stale after %v of silence, hive-1 offline after %v (default stale_after %v)", time.Since(t0).Round(time.Millisecond), workerSilent.Round(time.Millisecond), hiveSilent.Round(time.Millisecond), defaultStaleAfter)
}
