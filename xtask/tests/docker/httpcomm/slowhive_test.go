//go:build docker

package httpcomm

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// The queen's [http] timeout against a slow hive (connection-level latency
// on queen→hive, the hive's answers delayed): latency at three times the
// timeout makes a forwarded op end [ERROR] naming the timeout after one
// attempt (no earlier than the timeout, before twice it); latency at a third of it succeeds, no sooner than the
// latency (the toxic is in force); recovered, the op is fast again.
func TestTimeoutAgainstSlowHive(t *testing.T) {
	t.Parallel()
	const timeout = 6 * time.Second
	toml := queenToml(t, "localhost", "timeout = \"3s\"", "timeout = \"6s\"")
	h := integration.Start(t, integration.Localhost, integration.WithFile("queen", "/etc/rbee/queen.toml", toml))
	ctx := suite.Context(t, 4*time.Minute)
	var hist checks.History

	// The toxic catches connections opened after it: restart the queen so
	// none of its connections to the hive predates the fault.
	slow := 3 * timeout
	h.MustInject(t, integration.Latency("queen", localHive, slow, 0))
	h.MustRestart(t, "queen")
	h.MustWaitForHealthy(t, "queen", 60*time.Second)
	q := h.MustQueen(t) // a restart publishes a new host port
	if err := checks.AwaitHiveState(ctx, q, localHive, api.HiveOnline, 20*time.Second); err != nil {
		t.Fatal(err) // heartbeats are hive→queen: not slowed
	}

	jctx, cancel := context.WithTimeout(ctx, slow)
	t0 := time.Now()
	out, err := hist.Run(jctx, q, hiveOp(localHive))
	took := time.Since(t0)
	cancel()
	if err != nil {
		t.Fatalf("op with %v latency against a %v timeout did not end within %v: %v", slow, timeout, slow, err)
	}
	t.Logf("latency %v: ended after %v: %s", slow, took.Round(time.Millisecond), out.Terminator())
	if out.Kind != sse.Error || !strings.Contains(out.Error, "timed out after "+timeout.String()) {
		t.Fatalf("terminator %q; want [ERROR] naming \"timed out after %s\"", out.Terminator(), timeout)
	}
	// One attempt ends after ~timeout, a retried one after at least twice
	// it: the upper bound has a whole timeout of room for a loaded machine.
	if took < timeout-100*time.Millisecond || took >= 2*timeout {
		t.Errorf("failed after %v, want within [%v, %v): one attempt of the %v timeout", took, timeout, 2*timeout, timeout)
	}
	if rs := retryNarrations(t, out); len(rs) > 0 {
		t.Errorf("timeouts must not be retried; narration: %+v", rs)
	}

	// Well below the timeout: the op succeeds, and pays the latency.
	below := timeout / 3
	h.MustInject(t, integration.Latency("queen", localHive, below, 0))
	t0 = time.Now()
	if _, err := checks.EndedDone(hist.Run(ctx, q, hiveOp(localHive))); err != nil {
		t.Fatalf("op with %v latency against a %v timeout: %v", below, timeout, err)
	}
	took = time.Since(t0)
	t.Logf("latency %v: succeeded after %v", below, took.Round(time.Millisecond))
	if took < below {
		t.Errorf("op under %v latency took only %v: the latency was not in force", below, took)
	}

	// Recovered: the same connections, no delay.
	h.MustRecover(t, integration.Latency("queen", localHive, 0, 0))
	t0 = time.Now()
	if _, err := checks.EndedDone(hist.Run(ctx, q, hiveOp(localHive))); err != nil {
		t.Fatalf("after recover: %v", err)
	}
	if took = time.Since(t0); took >= below {
		t.Errorf("op after recover took %v, want under the removed %v latency", took, below)
	}
	if err := hist.CheckNothingLost(ctx, q); err != nil {
		t.Fatal(err)
	}
}
