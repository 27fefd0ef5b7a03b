//go:build docker

package lifecycle

import (
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

const (
	// shortStartTimeout is [lifecycle] start_timeout in
	// TestHiveStartGivesUpAfterStartTimeout.
	shortStartTimeout = 4 * time.Second
	// defaultStartTimeout is start_timeout's default (docs/PROTOCOL.md):
	// a queen that ignored the configured value would wait this long.
	defaultStartTimeout = 30 * time.Second
)

// hive_start of a hive whose rbee-hive runs but never answers /health (the
// binary replaced by a script that sleeps) ends [ERROR] naming
// start_timeout, no sooner than the configured 4 s after it began waiting
// and well before the 30 s default.
func TestHiveStartGivesUpAfterStartTimeout(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.Localhost,
		integration.WithEnv(map[string]string{"RBEE_HIVE_AUTOSTART": "0"}),
		integration.WithFile("queen", "/etc/rbee/queen.toml", suite.QueenConfig(t, "localhost", map[string]string{
			"lifecycle.start_timeout": `"` + shortStartTimeout.String() + `"`,
		})))
	q := h.MustQueen(t)
	if code := curlExit(t, h); code != 7 {
		t.Fatalf("hive /health from the queen before hive_start: curl exit %d; want 7 (connection refused)", code)
	}
	// A process that starts and stays up (so the queen's "exited during
	// start" check does not end the wait early) but never listens.
	suite.Sh(t, h, hive, `printf '#!/bin/sh\nexec sleep 600\n' > /home/rbee/.local/bin/rbee-hive && chown rbee:rbee /home/rbee/.local/bin/rbee-hive && chmod 0755 /home/rbee/.local/bin/rbee-hive`)

	var waiting time.Time // when the queen said it started waiting for /health
	submitted := time.Now()
	var hist checks.History
	o, err := suite.Follow(suite.Context(t, opTimeout), t, q, &hist, api.JobRequest{Operation: api.OpHiveStart, Alias: hive}, func(ev sse.Event) error {
		n, ok, err := client.Narration(ev)
		if err != nil {
			return err
		}
		if ok && waiting.IsZero() && strings.Contains(n.Message, "waiting for") {
			waiting = time.Now()
			t.Logf("narration: %s", n.Message)
			if want := "(up to " + shortStartTimeout.String() + ")"; !strings.Contains(n.Message, want) {
				t.Errorf("hive_start narration %q does not say %q: the queen did not load the configured start_timeout", n.Message, want)
			}
		}
		return nil
	})
	ended := time.Now()
	if err != nil {
		t.Fatalf("hive_start: %v", err)
	}
	t.Logf("hive_start: %s, %v after submit, %v after the queen began waiting", o.Terminator(),
		ended.Sub(submitted).Round(time.Millisecond), ended.Sub(waiting).Round(time.Millisecond))
	suite.MustError(t, o, hive, "did not answer within "+shortStartTimeout.String(), "start_timeout")
	if waiting.IsZero() {
		t.Fatalf("hive_start never narrated that it was waiting for /health: %v", suite.NarrationText(o))
	}
	// From below: the queen's wait began after the submit, so the whole job
	// cannot be shorter than start_timeout. From above: halfway from
	// start_timeout to the default leaves a loaded machine 13 s for the
	// last probe and the stream, and stays far from a 30 s wait.
	if d := ended.Sub(submitted); d < shortStartTimeout {
		t.Errorf("hive_start gave up %v after it was submitted; want at least start_timeout %v", d, shortStartTimeout)
	}
	if limit := shortStartTimeout + (defaultStartTimeout-shortStartTimeout)/2; ended.Sub(waiting) > limit {
		t.Errorf("hive_start gave up %v after it began waiting for /health; want within %v (start_timeout %v, the default %v)",
			ended.Sub(waiting), limit, shortStartTimeout, defaultStartTimeout)
	}
}
