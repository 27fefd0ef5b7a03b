//go:build docker

package httpcomm

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// Names from tests/docker/ and configs/ that the tests rely on.
const (
	localHive = "hive-localhost"
	// httpTimeout is [http] timeout in configs/*/queen.toml.
	httpTimeout = 3 * time.Second
)

// queenToml returns configs/<topology>/queen.toml with each old line
// replaced by its new one; every old line must occur exactly once, so a
// changed config file fails loudly instead of silently testing the default.
func queenToml(t *testing.T, topology string, oldNew ...string) []byte {
	t.Helper()
	s := string(suite.RepoFile(t, filepath.Join("configs", topology, "queen.toml")))
	for i := 0; i+1 < len(oldNew); i += 2 {
		if n := strings.Count(s, oldNew[i]); n != 1 {
			t.Fatalf("configs/%s/queen.toml: %q occurs %d times, want 1", topology, oldNew[i], n)
		}
		s = strings.Replace(s, oldNew[i], oldNew[i+1], 1)
	}
	return []byte(s)
}

// retryNarrations are the queen's "retrying …" narration messages.
func retryNarrations(t *testing.T, o client.Outcome) []api.Narration {
	var rs []api.Narration
	for _, n := range suite.Narrations(t, o) {
		if strings.HasPrefix(n.Message, "retrying ") {
			rs = append(rs, n)
		}
	}
	return rs
}

// hiveOp is a cheap operation the queen forwards to a hive.
func hiveOp(hive string) api.JobRequest {
	return api.JobRequest{Operation: api.OpWorkerProcessList, HiveID: hive}
}

// rawStream reads a job stream at url with its own HTTP connection,
// sending Last-Event-ID when lastID > 0. It stops after max events (max ≤ 0:
// read to EOF) and closes the connection: a reader that goes away.
// It returns every event in order, terminators included, and calls
// onEvent (if non-nil) for each as it arrives.
func rawStream(ctx context.Context, url string, lastID, max int, onEvent func(sse.Event)) ([]sse.Event, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if lastID > 0 {
		req.Header.Set("Last-Event-ID", strconv.Itoa(lastID))
	}
	// A transport of its own: closing the body really closes the connection.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	r := sse.NewReader(resp.Body)
	var evs []sse.Event
	for max <= 0 || len(evs) < max {
		ev, err := r.Next()
		if err == io.EOF {
			return evs, nil
		}
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
		if onEvent != nil {
			onEvent(ev)
		}
	}
	return evs, nil
}

// describeEvents prints events compactly for a failure message.
func describeEvents(evs []sse.Event) string {
	var b strings.Builder
	for i, ev := range evs {
		if i == 8 && len(evs) > 12 {
			fmt.Fprintf(&b, "  … %d more …\n", len(evs)-12)
			evs = evs[len(evs)-4:]
			for _, ev := range evs {
				fmt.Fprintf(&b, "  id=%d %s %s\n", ev.ID, ev.Name, ev.Data)
			}
			break
		}
		fmt.Fprintf(&b, "  id=%d %s %s\n", ev.ID, ev.Name, ev.Data)
	}
	return b.String()
}
