//go:build docker

package e2e

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// cutProxy is an HTTP proxy on 127.0.0.1 in front of the queen that breaks
// the first job stream it relays after a number of complete events plus a
// few bytes of the next one (a connection lost in the middle of an event),
// and records every request it forwarded.
type cutProxy struct {
	srv       *http.Server
	addr      string
	cutAfter  int // complete events before the cut
	mu        sync.Mutex
	requests  []proxied
	cutDone   bool
	lastWhole int // id of the last complete event before the cut
}

type proxied struct {
	method, path, lastEventID string
}

var sseID = regexp.MustCompile(`(?m)^id: (\d+)$`)

// cutBody passes a stream through until cutAfter events went by, then a
// few more bytes, then fails: the proxy aborts the client's connection.
type cutBody struct {
	rc        io.ReadCloser
	p         *cutProxy
	forwarded []byte
	cut       bool
}

var errCut = errors.New("cut by the test proxy")

func (b *cutBody) Read(buf []byte) (int, error) {
	if b.cut {
		return 0, errCut
	}
	n, err := b.rc.Read(buf)
	if n == 0 {
		return n, err
	}
	// Where would the cut fall in forwarded+buf[:n]?
	all := append(b.forwarded, buf[:n]...)
	seen, off := 0, 0
	for seen < b.p.cutAfter {
		i := bytes.Index(all[off:], []byte("\n\n"))
		if i < 0 {
			break
		}
		off += i + 2
		seen++
	}
	if seen < b.p.cutAfter {
		b.forwarded = all
		return n, err
	}
	// Keep half of the next event's first line: the client has a torn event.
	keep := min(off+6, len(all))
	ids := sseID.FindAllSubmatch(all[:off], -1)
	b.p.mu.Lock()
	b.p.cutDone = true
	if len(ids) > 0 {
		b.p.lastWhole, _ = strconv.Atoi(string(ids[len(ids)-1][1]))
	}
	b.p.mu.Unlock()
	b.cut = true
	give := keep - len(b.forwarded)
	if give < 0 {
		give = 0
	}
	b.forwarded = all[:keep]
	return give, nil
}

func (b *cutBody) Close() error { return b.rc.Close() }

func startCutProxy(t *testing.T, queenURL string, cutAfter int) *cutProxy {
	t.Helper()
	target, err := url.Parse(queenURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{cutAfter: cutAfter}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1 // SSE: pass every write through at once
	director := rp.Director
	rp.Director = func(r *http.Request) {
		p.mu.Lock()
		p.requests = append(p.requests, proxied{r.Method, r.URL.Path, r.Header.Get("Last-Event-ID")})
		p.mu.Unlock()
		director(r)
	}
	rp.ModifyResponse = func(resp *http.Response) error {
		p.mu.Lock()
		first := !p.cutDone && strings.HasSuffix(resp.Request.URL.Path, "/stream")
		p.mu.Unlock()
		if first {
			resp.Body = &cutBody{rc: resp.Body, p: p}
		}
		return nil
	}
	rp.ErrorLog = nil
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = "http://" + ln.Addr().String()
	p.srv = &http.Server{Handler: rp}
	go p.srv.Serve(ln)
	t.Cleanup(func() { p.srv.Close() })
	return p
}

// rbee-keeper whose stream from the queen breaks in the middle of an event
// resumes with Last-Event-ID (the id of the last whole event it got) and
// prints every token exactly once: its output equals that of the same
// seeded run over an unbroken connection, and the job was submitted once.
func TestKeeperResumesCutStream(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.FullStack, integration.WithServices("queen", "worker-1"))
	q := h.MustQueen(t)
	if _, err := checks.AwaitWorker(t.Context(), q, "worker-1", stateTimeout, "fresh", checks.Fresh); err != nil {
		t.Fatal(err)
	}
	args := []string{"infer", "--model", suite.TinyModel, "--max-tokens", "300", "--temperature", "0.9", "--seed", "11", "Alice was beginning"}

	whole := runKeeper(t, append([]string{"--queen", q.BaseURL()}, args...)...)
	if whole.code != 0 || len(strings.TrimSpace(whole.stdout)) < 100 {
		t.Fatalf("uncut run: exit %d, %d bytes of output; want 0 and hundreds of tokens\nstderr:\n%s", whole.code, len(whole.stdout), whole.stderr)
	}
	if strings.Contains(whole.stderr, "stream resumed") {
		t.Fatalf("uncut run resumed its stream (negative control):\n%s", whole.stderr)
	}

	const cutAfter = 60 // events: narration, then tokens; about a fifth of the stream
	p := startCutProxy(t, q.BaseURL(), cutAfter)
	cut := runKeeper(t, append([]string{"--queen", p.addr}, args...)...)
	if cut.code != 0 {
		t.Fatalf("cut run: exit %d; want 0\nstdout:\n%s\nstderr:\n%s", cut.code, cut.stdout, cut.stderr)
	}
	p.mu.Lock()
	reqs, lastWhole, didCut := append([]proxied(nil), p.requests...), p.lastWhole, p.cutDone
	p.mu.Unlock()
	if !didCut {
		t.Fatalf("the proxy never cut the stream (fewer than %d events?); requests %+v", cutAfter, reqs)
	}
	var posts, streams []proxied
	for _, r := range reqs {
		switch {
		case r.method == http.MethodPost && r.path == "/v1/jobs":
			posts = append(posts, r)
		case r.method == http.MethodGet && strings.HasSuffix(r.path, "/stream"):
			streams = append(streams, r)
		}
	}
	if len(posts) != 1 {
		t.Fatalf("the keeper submitted %d jobs through the proxy, want 1: %+v", len(posts), reqs)
	}
	if len(streams) != 2 || streams[0].lastEventID != "" || streams[1].lastEventID != strconv.Itoa(lastWhole) {
		t.Fatalf("stream requests %+v; want two: the first without Last-Event-ID, the second with Last-Event-ID %d (the last whole event before the cut)", streams, lastWhole)
	}
	if !strings.Contains(cut.stderr, "stream resumed 1 time(s)") {
		t.Errorf("the keeper did not report the resume; stderr:\n%s", cut.stderr)
	}
	if cut.stdout != whole.stdout {
		t.Fatalf("output after a resume differs from the uncut run of the same seed:\ncut:   %q\nwhole: %q", cut.stdout, whole.stdout)
	}
	t.Logf("cut after event %d; resumed; %d bytes of tokens identical to the uncut run", lastWhole, len(cut.stdout))
}
