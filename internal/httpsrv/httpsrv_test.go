package httpsrv

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serve starts h under Server/Serve with l on loopback.
func serve(t *testing.T, h http.Handler, l Limits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := Server(h, l)
	go func() { _ = Serve(srv, ln, l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func echo() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "body: "+err.Error(), http.StatusRequestTimeout)
			return
		}
		fmt.Fprintf(w, "got %d bytes", len(b))
	})
}

// A body trickled slower than BodyTimeout allows is cut and the connection
// closed; a body sent at once is read whole.
func TestSlowBodyIsCut(t *testing.T) {
	addr := serve(t, echo(), Limits{BodyTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
	start := time.Now()
	closed := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(c) // until the server closes
		closed <- string(b)
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for sent := 0; sent < 100; sent++ {
		select {
		case got := <-closed:
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("cut after %s; want about the 300ms deadline", took)
			}
			if !strings.Contains(got, " 408 ") {
				t.Fatalf("answer %q; want 408", got)
			}
			return
		case <-tick.C:
			_, _ = c.Write([]byte("x"))
		}
	}
	t.Fatal("a body trickled at 1 byte/100ms over 10s was not cut by a 300ms deadline")
}

// A streaming response lasts past BodyTimeout and IdleTimeout: the body
// deadline is lifted once the body is read, and no write timeout exists.
func TestStreamOutlivesDeadlines(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		for i := range 8 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		fmt.Fprint(w, "data: end\n\n")
	})
	addr := serve(t, h, Limits{BodyTimeout: 200 * time.Millisecond, IdleTimeout: 200 * time.Millisecond, ReadHeaderTimeout: 200 * time.Millisecond})
	resp, err := http.Post("http://"+addr+"/", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || !strings.HasSuffix(string(b), "data: end\n\n") {
		t.Fatalf("stream of 800ms under 200ms deadlines: %q, %v", b, err)
	}
}

// Headers over MaxHeaderBytes are answered 431.
func TestBigHeadersRefused(t *testing.T) {
	addr := serve(t, echo(), Limits{MaxHeaderBytes: 4 << 10})
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("64 KiB header: %d; want 431", resp.StatusCode)
	}
	req.Header.Set("X-Big", "small")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("small header: %v %v", resp, err)
	}
}

// A connection that sends nothing is closed after ReadHeaderTimeout.
func TestSilentConnectionClosed(t *testing.T) {
	addr := serve(t, echo(), Limits{ReadHeaderTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read on a silent connection: %v; want EOF (closed by the server)", err)
	}
}

// At MaxConns open connections the next client waits; when one closes it
// is served.
func TestConnectionCap(t *testing.T) {
	addr := serve(t, echo(), Limits{MaxConns: 2})
	var idle []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
		// A request that completes proves the server accepted c.
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			t.Fatal(err)
		}
	}
	client := &http.Client{Timeout: 300 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := client.Get("http://" + addr + "/"); err == nil {
		resp.Body.Close()
		t.Fatal("a third connection was served while the cap of 2 was open")
	}
	idle[0].Close()
	client.Timeout = 10 * time.Second
	resp, err := client.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("after one of the two closed: %v", err)
	}
	resp.Body.Close()
	idle[1].Close()
}
