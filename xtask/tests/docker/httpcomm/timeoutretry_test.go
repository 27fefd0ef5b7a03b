//go:build docker

package httpcomm

import (
	"context"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// A hive that goes silent (packets dropped) in the middle of a forwarded
// job is not retried on timeouts: the queen resumes the cut stream
// [http] retries times, each reconnect's dial times out once, and after
// the DELETE that tries to cancel the hive's job times out too, the job
// ends [ERROR]. So it ends no sooner than retries×timeout + one cancel
// timeout after the fault, and well before retries×(retries+1)×timeout
// (every reconnect's dial retried retries times); no retry is narrated.
func TestStreamTimeoutsNotRetried(t *testing.T) {
	t.Parallel()
	toml := suite.QueenConfig(t, "full-stack", map[string]string{"http.timeout": `"2s"`, "http.retries": "4"})
	cfg := queenHTTP(t, toml)
	h, q := suite.StartHive(t, integration.WithFile("queen", "/etc/rbee/queen.toml", toml))
	ctx := suite.Context(t, 5*time.Minute)
	// suite.BigModel at 1 mbit/s takes about a minute: the hive job is still
	// running, and streaming progress, when the fault comes.
	h.MustInject(t, integration.RateLimit("hub", "1mbit"))

	// The bounds, from the configured timeout and retries. The cancel
	// (cancelRemote) waits min(timeout, 3 s).
	cancelTO := min(cfg.Timeout, 3*time.Second)
	lower := time.Duration(cfg.Retries)*cfg.Timeout + cancelTO
	retried := time.Duration(cfg.Retries*(cfg.Retries+1))*cfg.Timeout + cancelTO
	upper := (lower + retried) / 2
	if cfg.Retries < 2 || upper-lower < 5*time.Second {
		t.Fatalf("[http] timeout %v, retries %d: the window [%v, %v] cannot tell one dial per reconnect from retried dials", cfg.Timeout, cfg.Retries, lower, upper)
	}

	var hist checks.History
	w := newForwardWatch()
	acc, done := suite.Submit(ctx, t, q, &hist, api.JobRequest{Operation: api.OpModelDownload, HiveID: relayHive, Model: suite.BigModel}, w.event)
	awaitProgress(t, ctx, w, done, followed)

	// Drop what the queen sends to the hive, then abort the open stream:
	// each reconnect's SYN is dropped and its dial times out.
	t0 := time.Now()
	h.MustInject(t, integration.Block("queen", relayHive))
	h.MustCutConnections(t, "queen", relayHive, hivePort)
	t1 := time.Now()

	var r suite.Followed
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("the queen's job did not end after its hive went silent")
	}
	if r.Err != nil {
		t.Fatalf("following %s: %v", acc.JobID, r.Err)
	}
	t.Logf("ended %v after the fault began (%v after the cut); window [%v, %v]: %s",
		r.At.Sub(t0).Round(time.Millisecond), r.At.Sub(t1).Round(time.Millisecond), lower, upper, r.Out.Terminator())
	suite.MustError(t, r.Out, relayHive, "lost the job stream")
	if rs := retryNarrations(t, r.Out); len(rs) > 0 {
		t.Errorf("timed-out requests were retried: %+v", rs)
	}
	// Each reconnect waited for its dial to time out: not sooner.
	if took := r.At.Sub(t0); took < lower-100*time.Millisecond {
		t.Errorf("the job failed %v after the fault, before %d reconnect timeouts and the cancel's (%v) could pass", took, cfg.Retries, lower)
	}
	// And once each: retried dials would take about retries+1 times longer.
	if took := r.At.Sub(t1); took > upper {
		t.Errorf("the job failed %v after the cut; want at most %v (one dial timeout per reconnect; retried dials need at least %v)", took, upper, retried)
	}

	// The queen is fine once the hive can be reached again.
	h.MustRecoverAll(t)
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := checks.EndedDone(hist.Run(cctx, q, hiveOp(relayHive))); err != nil {
		t.Fatalf("after the heal: %v", err)
	}
	suite.NothingLost(t, time.Minute, q, &hist)
}
