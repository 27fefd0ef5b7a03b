//go:build docker

package httpcomm

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
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

// forwardedAs matches the queen's narration of a job it forwarded to a
// hive: the hive's own job id.
var forwardedAs = regexp.MustCompile(`forwarded \S+ to \S+ as (job-[0-9a-f-]+)`)

// hiveJobOf is the id of the job that queen job o was forwarded as on
// hive, from the queen's "forwarded … to hive as job-…" narration; none
// fails the test.
func hiveJobOf(t *testing.T, o client.Outcome, hive string) string {
	t.Helper()
	var hiveJob string
	for _, n := range suite.Narrations(t, o) {
		if m := forwardedAs.FindStringSubmatch(n.Message); m != nil && n.Hive == hive {
			hiveJob = m[1]
		}
	}
	if hiveJob == "" {
		t.Fatalf("no \"forwarded … to %s as job-…\" narration on queen job %s", hive, o.JobID)
	}
	return hiveJob
}

// forwardWatch spots, in a queen job's events as they arrive, the hive job
// it was forwarded as and its first download_progress narration.
type forwardWatch struct {
	hiveJob      chan string   // gets the hive's job id, once
	progress     chan struct{} // closed at the first progress event
	sentJob      bool
	sentProgress bool
}

func newForwardWatch() *forwardWatch {
	return &forwardWatch{hiveJob: make(chan string, 1), progress: make(chan struct{})}
}

// event is a Follow onEvent; an event that is not narration, or not
// JSON, is passed over (the client's stream is checked elsewhere).
func (w *forwardWatch) event(ev sse.Event) error {
	n, ok, err := client.Narration(ev)
	if !ok || err != nil {
		return nil
	}
	if m := forwardedAs.FindStringSubmatch(n.Message); m != nil && !w.sentJob {
		w.sentJob = true
		w.hiveJob <- m[1]
	}
	if n.Action == "download_progress" && !w.sentProgress {
		w.sentProgress = true
		close(w.progress)
	}
	return nil
}

// awaitProgress waits for the forwarded job's id and then its first
// progress event, and returns the hive's job id. A stream that ends first
// (a value on ended, described by how) or ctx ending fails the test.
func awaitProgress[R any](t *testing.T, ctx context.Context, w *forwardWatch, ended <-chan R, how func(R) string) string {
	t.Helper()
	var hiveJob string
	select {
	case hiveJob = <-w.hiveJob:
	case r := <-ended:
		t.Fatalf("the queen's stream ended before the job was forwarded: %s", how(r))
	case <-ctx.Done():
		t.Fatal("no \"forwarded … as job-…\" narration")
	}
	select {
	case <-w.progress:
	case r := <-ended:
		t.Fatalf("the queen's stream ended before the first progress event: %s", how(r))
	case <-ctx.Done():
		t.Fatal("no download_progress narration")
	}
	return hiveJob
}

// relayedResult is how a raw read of a queen job's stream ended: its events
// in order (with when each arrived, where the reader records it) and error.
type relayedResult struct {
	evs   []sse.Event
	times []time.Time // when each event arrived
	err   error
	end   time.Time
}

// describe tells how the stream ended, for awaitProgress.
func (r relayedResult) describe() string { return fmt.Sprintf("%v\n%s", r.err, describeEvents(r.evs)) }

// followed describes how a queen job's follow ended, for awaitProgress.
func followed(r suite.Followed) string { return fmt.Sprintf("%s (%v)", r.Out.Terminator(), r.Err) }

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
	body, err := openStream(ctx, url, lastID)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	r := sse.NewReader(body)
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

// openStream GETs the stream at url on a connection of its own (closing
// the body really closes it), sending Last-Event-ID when lastID > 0; an
// answer other than 200 is an error quoting its start.
func openStream(ctx context.Context, url string, lastID int) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if lastID > 0 {
		req.Header.Set("Last-Event-ID", strconv.Itoa(lastID))
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return resp.Body, nil
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
