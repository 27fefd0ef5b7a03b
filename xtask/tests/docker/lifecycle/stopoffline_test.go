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

// longStaleAfter is the queen's stale_after in TestHiveStopMarksOfflineAtOnce:
// far longer than any hive_stop takes, so only hive_stop itself can have
// made the hive offline when the test looks.
const longStaleAfter = time.Minute

// hive_stop marks the hive offline in /v1/hives as it returns, not a
// stale_after later; hive_start makes it online again.
func TestHiveStopMarksOfflineAtOnce(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.Localhost,
		integration.WithFile("queen", "/etc/rbee/queen.toml", suite.QueenConfig(t, "localhost", map[string]string{
			"heartbeat.stale_after": `"` + longStaleAfter.String() + `"`,
		})))
	q := h.MustQueen(t)
	ctx := suite.Context(t, 4*opTimeout)

	// Negative control: before the stop the hive is online.
	if err := checks.AwaitHiveState(ctx, q, hive, api.HiveOnline, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	var hist checks.History
	suite.Result[api.HiveStopResult](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStop, Alias: hive})
	row, err := checks.Hive(ctx, q, hive)
	looked := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if row.LastSeen == nil {
		t.Fatalf("GET /v1/hives after hive_stop: %+v; want the last_seen of the hive's heartbeats before the stop", row)
	}
	// The check means something only while stale_after cannot yet have
	// turned the hive offline by itself.
	if silent := looked.Sub(*row.LastSeen); silent >= longStaleAfter {
		t.Fatalf("looked %v after the hive's last heartbeat, not within stale_after %v: inconclusive", silent, longStaleAfter)
	}
	if row.State != api.HiveOffline {
		t.Errorf("GET /v1/hives right after hive_stop (%v after its last heartbeat, stale_after %v): state %q; want %q",
			looked.Sub(*row.LastSeen).Round(time.Millisecond), longStaleAfter, row.State, api.HiveOffline)
	}

	// The offline mark is not sticky: the next hive_start's heartbeats
	// make the hive online again.
	suite.Result[api.HiveStartResult](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpHiveStart, Alias: hive})
	if err := checks.AwaitHiveState(ctx, q, hive, api.HiveOnline, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}
