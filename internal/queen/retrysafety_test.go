package queen

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/config"
)

// A POST /v1/jobs that reached the hive on a reused keep-alive connection,
// which then broke before the answer, is not sent again (neither by the
// retry policy nor by net/http's own retry of reused connections), and the
// job's error says the hive may have accepted it.
func TestForwardPOSTNotRetriedAfterDelivery(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	posts, conns := 0, 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns++
			mu.Unlock()
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					mu.Lock()
					posts++
					n := posts
					mu.Unlock()
					if n == 1 {
						// A well-formed answer keeps the connection alive
						// for the next request.
						body := `{"error":{"code":"invalid_request","message":"no such model"}}`
						_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: "+
							strconv.Itoa(len(body))+"\r\n\r\n"+body)
						continue
					}
					// The request is in; the connection dies unanswered.
					_ = c.(*net.TCPConn).SetLinger(0)
					return
				}
			}(c)
		}
	}()
	host, port := splitHostPort(t, "http://"+ln.Addr().String())
	q := newTestQueen(t, []config.Hive{{Alias: "hive-1", Hostname: host, HivePort: port, SSHPort: 22, SSHUser: "rbee"}}, nil)

	first := q.run(t, api.JobRequest{Operation: api.OpModelGet, HiveID: "hive-1", Model: "a/b:c"})
	wantError(t, first, "no such model")
	out := q.run(t, api.JobRequest{Operation: api.OpWorkerSpawn, HiveID: "hive-1", Model: "a/b:c", Device: "cpu:0"})
	wantError(t, out, "hive-1 (http://"+ln.Addr().String()+"): ", "may have been accepted, so it was not retried")
	for _, n := range narrations(t, out) {
		if n.Action == "retry" {
			t.Fatalf("a POST that reached the hive was retried: %+v", n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if posts != 2 || conns != 1 {
		t.Fatalf("hive saw %d POSTs on %d connections; want 2 on 1 (the second on the reused connection, once)", posts, conns)
	}
	if strings.Contains(out.Error, "connection refused") {
		t.Fatalf("error %q claims the hive never saw the request", out.Error)
	}
}
