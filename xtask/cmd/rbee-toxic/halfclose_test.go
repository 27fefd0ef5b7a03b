package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/xtask/toxic"
)

// sinkServer reads each connection to EOF, then answers "got N" (the bytes
// it read) and closes: the protocol of an upload that ends with the
// client's shutdown(SHUT_WR).
func sinkServer(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				fmt.Fprintf(c, "got %d\n", n)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// upload sends n bytes, half-closes, and returns what came back before EOF.
func upload(t *testing.T, addr string, n int) (string, error) {
	t.Helper()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := c.Write(make([]byte, n)); err != nil {
		return "", err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

func oneToxic(dst netip.AddrPort, name, typ, stream string, attrs map[string]any) toxic.State {
	return toxic.State{Routes: []toxic.Route{{Addr: dst.Addr(), Toxics: []toxic.Toxic{{
		Name: name, Type: typ, Stream: stream, Toxicity: 1, Attributes: attrs,
	}}}}}
}

// The client's half-close reaches the server as a FIN, and the server's
// answer written after it reaches the client: directly (the control),
// through the proxy with no toxic, and through an upstream bandwidth cap
// and a downstream latency.
func TestHalfCloseIsForwarded(t *testing.T) {
	dst := sinkServer(t)
	const n = 200_000
	want := fmt.Sprintf("got %d\n", n)
	if got, err := upload(t, dst.String(), n); err != nil || got != want {
		t.Fatalf("direct upload: %q, %v; want %q", got, err, want)
	}
	s, addr := startProxy(t, dst)
	for _, tc := range []struct {
		name string
		st   toxic.State
	}{
		{"no toxic", toxic.State{}},
		{"bandwidth upstream", oneToxic(dst, "bandwidth_upstream", "bandwidth", "upstream", map[string]any{"rate": 1000})},
		{"latency downstream", oneToxic(dst, "latency_downstream", "latency", "downstream", map[string]any{"latency": 50, "jitter": 0})},
	} {
		if err := s.apply(context.Background(), tc.st); err != nil {
			t.Fatal(err)
		}
		if got, err := upload(t, addr, n); err != nil || got != want {
			t.Errorf("%s: upload through the proxy answered %q, %v; want %q", tc.name, got, err, want)
		}
	}
}

// The other way round: the server sends a greeting and half-closes; the
// client reads it to EOF and may still send, and the server receives that.
func TestServerHalfCloseIsForwarded(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "hello\n")
		_ = c.(*net.TCPConn).CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		b, _ := io.ReadAll(c)
		got <- string(b)
	}()
	_, addr := startProxy(t, ln.Addr().(*net.TCPAddr).AddrPort())
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "hello\n" {
		t.Fatalf("greeting: %q, %v", b, err)
	}
	if _, err := io.WriteString(c, "bye\n"); err != nil {
		t.Fatalf("write after the server's half-close: %v", err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	select {
	case s := <-got:
		if s != "bye\n" {
			t.Fatalf("server read %q after its half-close, want \"bye\\n\"", s)
		}
	case <-time.After(time.Minute):
		t.Fatal("the server never got the client's data and FIN")
	}
}

// A toxic that ends a stream by itself closes the whole connection, not
// just that direction: after limit_data cut the answer, the server's next
// write fails instead of going on into a half-open connection.
func TestToxicCloseEndsTheConnection(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	werr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 1000)
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			if _, err := c.Write(buf); err != nil {
				werr <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
		werr <- nil
	}()
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	s, addr := startProxy(t, dst)
	if err := s.apply(context.Background(), oneToxic(dst, "limit_data_downstream", "limit_data", "downstream", map[string]any{"bytes": 100})); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	b, err := io.ReadAll(c)
	if err != nil || len(b) != 100 {
		t.Fatalf("limited read: %d bytes, %v; want 100 then EOF", len(b), err)
	}
	if err := <-werr; err == nil {
		t.Fatal("the server kept writing for a minute after limit_data closed the connection")
	} else if !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") && !strings.Contains(err.Error(), "broken pipe") {
		t.Logf("server write ended with %v", err)
	}
}
