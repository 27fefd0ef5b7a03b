//go:build docker

package httpcomm

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// httpConfig is the [http] section of a queen.toml a test wrote, read
// back so that its expectations come from the file the queen runs with.
type httpConfig struct {
	Timeout time.Duration
	Retries int
}

func queenHTTP(t *testing.T, queenToml []byte) httpConfig {
	t.Helper()
	var doc struct {
		HTTP struct {
			Timeout string `toml:"timeout"`
			Retries *int   `toml:"retries"`
		} `toml:"http"`
	}
	if err := toml.Unmarshal(queenToml, &doc); err != nil {
		t.Fatalf("queen.toml variant: %v", err)
	}
	d, err := time.ParseDuration(doc.HTTP.Timeout)
	if err != nil || d <= 0 {
		t.Fatalf("queen.toml variant: [http] timeout %q: want a positive duration (%v)", doc.HTTP.Timeout, err)
	}
	if doc.HTTP.Retries == nil || *doc.HTTP.Retries < 0 {
		t.Fatalf("queen.toml variant: [http] retries missing or negative")
	}
	return httpConfig{Timeout: d, Retries: *doc.HTTP.Retries}
}

// retryAttempt is the queen's retry narration: "retrying METHOD URL,
// attempt k/n: cause".
var retryAttempt = regexp.MustCompile(`^retrying (\S+) (\S+), attempt (\d+)/(\d+): (.+)$`)

// A hive whose connections are refused is retried exactly [http] retries
// times: one narration per retry, "attempt k/n" with k running 2..n and
// n = retries+1, each naming the refused POST, and the job's [ERROR] says
// it gave up after retries+1 attempts. Fewer retries than configured (or
// more) fail the count.
func TestRetriesExhaustedAsConfigured(t *testing.T) {
	t.Parallel()
	// An even count of six: with backoff 100 ms doubling to 1 s the queen
	// retries for about 3.5 s, far below the Submit bound of
	// timeout×(retries+2), so only the retry budget ends the job.
	toml := suite.QueenConfig(t, "localhost", map[string]string{"http.retries": "6"})
	cfg := queenHTTP(t, toml)
	h := integration.Start(t, integration.Localhost, integration.WithFile("queen", "/etc/rbee/queen.toml", toml))
	ctx := suite.Context(t, 2*time.Minute)
	q := h.MustQueen(t)
	var hist checks.History

	// Negative control: the same job on a reachable hive is not retried.
	out := suite.Run(t, time.Minute, q, &hist, hiveOp(localHive))
	if rs := retryNarrations(t, out); len(rs) != 0 {
		t.Fatalf("retries with the hive reachable: %+v", rs)
	}

	h.MustInject(t, integration.Reject("queen", localHive))
	// A keep-alive connection left by the job above would be reset, not
	// refused (the request may have arrived, so no retry): cut it, so the
	// next request must dial, and the dial is refused.
	if len(h.MustConnections(t, "queen", localHive, hivePort)) > 0 {
		h.MustCutConnections(t, "queen", localHive, hivePort)
	}
	out, err := hist.Run(ctx, q, hiveOp(localHive))
	if err != nil {
		t.Fatalf("forwarded job to the refusing hive: %v", err)
	}
	suite.MustError(t, out, localHive, "connection refused", "(after "+strconv.Itoa(cfg.Retries+1)+" attempts)")

	rs := retryNarrations(t, out)
	var ks []int
	for i, n := range rs {
		m := retryAttempt.FindStringSubmatch(n.Message)
		if m == nil {
			t.Errorf("retry narration %q: not \"retrying METHOD URL, attempt k/n: cause\"", n.Message)
			continue
		}
		k, _ := strconv.Atoi(m[3])
		total, _ := strconv.Atoi(m[4])
		ks = append(ks, k)
		if k != i+2 || total != cfg.Retries+1 {
			t.Errorf("retry narration %d says attempt %d/%d; want %d/%d", i+1, k, total, i+2, cfg.Retries+1)
		}
		if m[1] != "POST" || !strings.HasSuffix(m[2], "/v1/jobs") || m[5] != "connection refused" || n.Hive != localHive {
			t.Errorf("retry narration %+v: want POST …/v1/jobs, connection refused, hive %s", n, localHive)
		}
	}
	if len(rs) != cfg.Retries {
		t.Fatalf("%d retry narrations (attempts %v); want exactly [http] retries = %d", len(rs), ks, cfg.Retries)
	}
	t.Logf("%d retries, attempts %v, then %s", len(rs), ks, out.Terminator())

	h.MustRecoverAll(t)
	suite.Run(t, time.Minute, q, &hist, hiveOp(localHive))
	suite.NothingLost(t, time.Minute, q, &hist)
}
