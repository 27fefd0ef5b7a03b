//go:build docker

package security

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// Floods against the live localhost topology, from the test host through
// the ports published on 127.0.0.1: oversized heartbeats, many jobs, slow
// bodies, silent connections and huge headers. Each attack must be
// refused (any 4xx for a request; a closed connection for a slow or silent
// one), the queen and the hive must still run a real job afterwards, and
// the queen's resident memory (VmRSS read inside its container) must stay
// below boundsMaxRSS. The floods are sized to pass that bound by far on a
// build without the bounds (300 heartbeats of 1 MB took the queen to 530 MB).
//
//	RBEE_IMAGE_TAG=<tag> go run mage.go setup
//	go test -tags docker -count=1 ./xtask/tests/docker/security/ -run 'TestBounds' -v

const (
	boundsMaxRSS = 256 << 20 // bytes
	boundsHive   = "hive-localhost"
	// boundsMaxWorkers is the registry cap this suite's queen.toml sets.
	boundsMaxWorkers = 64
)

// boundsEnv is one localhost topology under attack.
type boundsEnv struct {
	h        *integration.Harness
	q        *client.Client
	queenURL string // http://127.0.0.1:<port>
	hiveURL  string
	queen    string // host:port
	hive     string
}

// boundsStart brings the localhost topology up with a queen whose registry
// cap is small, so a flood of new ids passes it quickly.
func boundsStart(t *testing.T) *boundsEnv {
	t.Helper()
	toml := append(suite.RepoFile(t, "configs/localhost/queen.toml"),
		[]byte(fmt.Sprintf("\n[limits]\nmax_workers = %d\nmax_learned_hives = 16\n", boundsMaxWorkers))...)
	h := integration.Start(t, integration.Localhost, integration.WithFile("queen", "/etc/rbee/queen.toml", toml))
	e := &boundsEnv{h: h, q: h.MustQueen(t), queenURL: h.MustURL(t, "queen", 8500), hiveURL: h.MustURL(t, boundsHive, 9000)}
	for _, p := range []struct {
		u   string
		dst *string
	}{{e.queenURL, &e.queen}, {e.hiveURL, &e.hive}} {
		pu, err := url.Parse(p.u)
		if err != nil || !strings.HasPrefix(pu.Host, "127.0.0.1:") {
			t.Fatalf("published URL %q: want http://127.0.0.1:PORT (%v)", p.u, err)
		}
		*p.dst = pu.Host
	}
	ctx := suite.Context(t, 2*time.Minute)
	if err := checks.AwaitHiveState(ctx, e.q, boundsHive, api.HiveOnline, time.Minute); err != nil {
		t.Fatal(err)
	}
	return e
}

// boundsRSS reads the VmRSS of the process named comm inside svc's
// container, in bytes.
func boundsRSS(t *testing.T, e *boundsEnv, svc, comm string) int64 {
	t.Helper()
	script := `for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = "` + comm + `" ] && grep '^VmRSS:' $p/status; done; true`
	out := suite.Sh(t, e.h, svc, script)
	f := strings.Fields(out)
	if len(f) != 3 || f[2] != "kB" {
		t.Fatalf("VmRSS of %s in %s: %q; want one \"VmRSS: N kB\" line", comm, svc, out)
	}
	kb, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || kb <= 0 {
		t.Fatalf("VmRSS of %s in %s: %q", comm, svc, out)
	}
	return kb << 10
}

// boundsRSSBelow checks the queen's and the hive's RSS after a flood, next
// to what it was before.
func boundsRSSBelow(t *testing.T, e *boundsEnv, before map[string]int64) {
	t.Helper()
	for _, p := range []struct{ svc, comm string }{{"queen", "queen-rbee"}, {boundsHive, "rbee-hive"}} {
		after := boundsRSS(t, e, p.svc, p.comm)
		t.Logf("%s RSS: %d MiB before, %d MiB after", p.comm, before[p.comm]>>20, after>>20)
		if after >= boundsMaxRSS {
			t.Errorf("%s RSS is %d MiB after the flood; want below %d MiB", p.comm, after>>20, boundsMaxRSS>>20)
		}
	}
}

func boundsRSSNow(t *testing.T, e *boundsEnv) map[string]int64 {
	t.Helper()
	return map[string]int64{
		"queen-rbee": boundsRSS(t, e, "queen", "queen-rbee"),
		"rbee-hive":  boundsRSS(t, e, boundsHive, "rbee-hive"),
	}
}

// boundsRealJobs runs a job on the queen and one the queen forwards to
// the hive; both must end [DONE].
func boundsRealJobs(t *testing.T, e *boundsEnv) {
	t.Helper()
	var hist checks.History
	for _, req := range []api.JobRequest{
		{Operation: api.OpStatus},
		{Operation: api.OpModelList, HiveID: boundsHive},
	} {
		if out := suite.Try(t, 2*time.Minute, e.q, &hist, req); out.Kind != sse.Done {
			t.Fatalf("%s after the flood: %s; want [DONE]", req.Operation, out.Terminator())
		}
	}
	suite.NothingLost(t, time.Minute, e.q, &hist)
}

// boundsHTTP is a client for the floods: no proxy, many connections.
func boundsHTTP() *http.Client {
	return &http.Client{
		Timeout:   2 * time.Minute,
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16, MaxConnsPerHost: 16},
	}
}

// boundsPost posts body and returns the status code and the error message.
func boundsPost(hc *http.Client, u string, body []byte) (int, string, error) {
	resp, err := hc.Post(u, "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb api.ErrorBody
	_ = json.Unmarshal(b, &eb)
	return resp.StatusCode, eb.Error.Message, nil
}

// boundsFlood runs n calls of fn on par goroutines and returns the first
// error any returned.
func boundsFlood(n, par int, fn func(i int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// Heartbeats with oversized fields are refused and stored nowhere; a flood
// of new worker ids does not grow the registry past its cap.
func TestBoundsHeartbeatFlood(t *testing.T) {
	t.Parallel()
	e := boundsStart(t)
	before := boundsRSSNow(t, e)
	hc := boundsHTTP()
	big := strings.Repeat("m", 1<<20-4096) // fits the 1 MiB body limit
	err := boundsFlood(300, 8, func(i int) error {
		b, _ := json.Marshal(api.WorkerHeartbeat{WorkerID: fmt.Sprintf("w-big-%d", i), HiveID: boundsHive, Model: big,
			Device: "cpu:0", URL: "http://10.0.0.1:9100", State: api.WorkerReady})
		code, msg, err := boundsPost(hc, e.queenURL+"/v1/worker-heartbeat", b)
		if err != nil {
			return err
		}
		if code < 400 || code > 499 {
			return fmt.Errorf("worker heartbeat with a 1 MB model: %d %q; want refused (4xx)", code, msg)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	many := make([]string, api.MaxHeartbeatWkrs*4)
	for i := range many {
		many[i] = fmt.Sprintf("w-%060d", i)
	}
	err = boundsFlood(40, 8, func(i int) error {
		b, _ := json.Marshal(api.HiveHeartbeat{HiveID: fmt.Sprintf("rogue-%d", i), URL: "http://10.0.0.1:9000", Workers: many})
		code, msg, err := boundsPost(hc, e.queenURL+"/v1/hive-heartbeat", b)
		if err != nil {
			return err
		}
		if code < 400 || code > 499 {
			return fmt.Errorf("hive heartbeat with %d workers (%d bytes): %d %q; want refused (4xx)", len(many), len(b), code, msg)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// New ids, each small and valid: at most the cap is ever stored (with
	// authenticated heartbeats none is).
	err = boundsFlood(4*boundsMaxWorkers, 8, func(i int) error {
		b, _ := json.Marshal(api.WorkerHeartbeat{WorkerID: fmt.Sprintf("w-new-%d", i), HiveID: boundsHive, Model: "org/repo:m.bin",
			Device: "cpu:0", URL: "http://10.0.0.1:9100", State: api.WorkerStarting})
		code, msg, err := boundsPost(hc, e.queenURL+"/v1/worker-heartbeat", b)
		if err != nil {
			return err
		}
		if code != http.StatusOK && code != http.StatusServiceUnavailable && (code < 400 || code > 499) {
			return fmt.Errorf("small heartbeat of a new id: %d %q; want 200, 4xx or 503 (registry full)", code, msg)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := suite.Context(t, time.Minute)
	ws, err := e.q.Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) > boundsMaxWorkers {
		t.Fatalf("%d workers registered after the flood; want at most the cap of %d", len(ws), boundsMaxWorkers)
	}
	for _, w := range ws {
		if len(w.Model) > api.MaxModelBytes || strings.HasPrefix(w.WorkerID, "w-big-") {
			t.Fatalf("an oversized heartbeat was stored: worker %q with a %d-byte model", w.WorkerID, len(w.Model))
		}
	}
	hs, err := e.q.Hives(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if strings.HasPrefix(h.Alias, "rogue-") {
			t.Fatalf("hive heartbeat with %d workers was stored as hive %q", len(many), h.Alias)
		}
	}
	boundsRealJobs(t, e)
	boundsRSSBelow(t, e, before)
}

// A flood of jobs is answered (accepted, or 503 at the running-jobs cap)
// and retained within the byte budget; after oversized heartbeats were
// refused no status result is big, so retention stays small.
func TestBoundsJobFlood(t *testing.T) {
	t.Parallel()
	e := boundsStart(t)
	before := boundsRSSNow(t, e)
	hc := boundsHTTP()
	big := strings.Repeat("m", 1<<20-4096)
	// Without field bounds these would make every status result ~64 MB.
	_ = boundsFlood(boundsMaxWorkers, 8, func(i int) error {
		b, _ := json.Marshal(api.WorkerHeartbeat{WorkerID: fmt.Sprintf("w-big-%d", i), HiveID: boundsHive, Model: big,
			Device: "cpu:0", URL: "http://10.0.0.1:9100", State: api.WorkerStarting})
		_, _, err := boundsPost(hc, e.queenURL+"/v1/worker-heartbeat", b)
		return err
	})
	var accepted, busy sync.Map
	err := boundsFlood(2000, 16, func(i int) error {
		code, msg, err := boundsPost(hc, e.queenURL+"/v1/jobs", []byte(`{"operation":"status"}`))
		switch {
		case err != nil:
			return err
		case code == http.StatusOK:
			accepted.Store(i, true)
		case code == http.StatusServiceUnavailable && strings.Contains(msg, "too many jobs running"):
			busy.Store(i, true)
		default:
			return fmt.Errorf("status job: %d %q; want 200 or 503 too many jobs running", code, msg)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	accepted.Range(func(any, any) bool { n++; return true })
	if n == 0 {
		t.Fatal("no job of the flood was accepted")
	}
	t.Logf("%d of 2000 status jobs accepted", n)
	boundsRealJobs(t, e)
	boundsRSSBelow(t, e, before)
}

// A body trickled at 1 byte every 5 s is cut by the body deadline (408 or
// a closed connection) on the queen and the hive, while both keep serving.
func TestBoundsSlowBody(t *testing.T) {
	t.Parallel()
	e := boundsStart(t)
	// The servers' body deadline is 20 s: a cut after at most 60 s leaves
	// room for a loaded machine, and 100 bytes at 1 byte/5 s would take
	// 500 s to send.
	const within = 60 * time.Second
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, target := range []struct{ name, addr, path string }{
		{"queen", e.queen, "/v1/jobs"},
		{"hive", e.hive, "/v1/jobs"},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			how, err := boundsTrickle(target.addr, target.path, within)
			if err != nil {
				errs <- fmt.Errorf("%s: %w", target.name, err)
				return
			}
			t.Logf("%s: slow body cut: %s", target.name, how)
		}()
	}
	// While the bodies trickle, real jobs still run.
	boundsRealJobs(t, e)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	boundsRealJobs(t, e)
}

// boundsTrickle sends a POST whose 100-byte body comes at 1 byte per 5 s
// and reports an error unless the server cuts it within d; else it says
// how and when the server did.
func boundsTrickle(addr, path string, d time.Duration) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	start := time.Now()
	if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n", path, addr); err != nil {
		return "", err
	}
	answer := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(c) // returns when the server closes
		answer <- string(b)
	}()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		select {
		case got := <-answer:
			// Refused: a closed connection, or any 4xx (408 from the body
			// deadline; a server that checks credentials first may say
			// 401 before reading the body at all).
			if got != "" && !strings.HasPrefix(got, "HTTP/1.1 4") {
				return "", fmt.Errorf("slow body answered %q after %s; want a 4xx or a closed connection", firstLine(got), time.Since(start))
			}
			if got == "" {
				got = "closed without an answer"
			}
			return fmt.Sprintf("%q after %s", firstLine(got), time.Since(start).Round(time.Second)), nil
		case <-tick.C:
			_, _ = c.Write([]byte(" "))
		case <-deadline.C:
			return "", fmt.Errorf("a body trickled at 1 byte/5 s is still open after %s", d)
		}
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(l)
}

// Many connections that never send a request are closed by the queen and
// the hive (header deadline), which serve real jobs meanwhile.
func TestBoundsIdleConnections(t *testing.T) {
	t.Parallel()
	e := boundsStart(t)
	before := boundsRSSNow(t, e)
	const n = 300
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for _, addr := range []string{e.queen, e.hive} {
		for range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("connection %d to %s: %v", len(conns), addr, err)
			}
			conns = append(conns, c)
		}
	}
	boundsRealJobs(t, e)
	// The header deadline is 10 s; allow 90 s on a loaded machine.
	deadline := time.Now().Add(90 * time.Second)
	for i, c := range conns {
		_ = c.SetReadDeadline(deadline)
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("idle connection %d is still open after 90 s; want it closed by the server", i)
		}
	}
	boundsRealJobs(t, e)
	boundsRSSBelow(t, e, before)
}

// Requests with 1 MiB of headers are refused (431, or the connection
// closed) by the queen and the hive, 150 at once, and memory stays low.
func TestBoundsBigHeaders(t *testing.T) {
	t.Parallel()
	e := boundsStart(t)
	before := boundsRSSNow(t, e)
	header := "X-Big: " + strings.Repeat("a", 1<<20) + "\r\n"
	for _, addr := range []string{e.queen, e.hive} {
		var mu sync.Mutex
		answered, closed := 0, 0
		err := boundsFlood(150, 150, func(i int) error {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
			// Write and read at once: the server may answer and close
			// before all of the header is sent.
			go func() {
				w := bufio.NewWriter(c)
				fmt.Fprintf(w, "GET /health HTTP/1.1\r\nHost: %s\r\n%s\r\n", addr, header)
				_ = w.Flush()
			}()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				mu.Lock()
				closed++ // closed without an answer: refused
				mu.Unlock()
				return nil
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				return fmt.Errorf("%s: 1 MiB of headers answered %d; want 431", addr, resp.StatusCode)
			}
			mu.Lock()
			answered++
			mu.Unlock()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: 1 MiB of headers: %d answered 431, %d closed", addr, answered, closed)
	}
	boundsRealJobs(t, e)
	boundsRSSBelow(t, e, before)
}
