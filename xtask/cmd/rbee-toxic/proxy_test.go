package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/xtask/toxic"
)

// echoServer answers every line it reads with the same line.
func echoServer(t *testing.T) netip.AddrPort {
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
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// startProxy runs the server with every connection's "original
// destination" fixed to dst (no iptables in a unit test).
func startProxy(t *testing.T, dst netip.AddrPort) (*server, string) {
	t.Helper()
	s := newServer(func(*net.TCPConn) (netip.AddrPort, error) { return dst, nil },
		func(ctx context.Context, a netip.AddrPort) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp4", a.String())
		})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() { _ = s.serve(ln) }()
	return s, ln.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn) time.Duration {
	t.Helper()
	t0 := time.Now()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != "ping\n" {
		t.Fatalf("echo = %q", buf)
	}
	return time.Since(t0)
}

func latencyState(dst netip.AddrPort, ms int) toxic.State {
	return toxic.State{Routes: []toxic.Route{{Addr: dst.Addr(), Toxics: []toxic.Toxic{{
		Name: "latency_downstream", Type: "latency", Stream: "downstream", Toxicity: 1,
		Attributes: map[string]any{"latency": ms, "jitter": 0},
	}}}}}
}

// A latency toxic applied to a route slows a live proxied connection from
// the moment apply returns (at least the delay, measured at the client), and
// removing it makes the same connection fast again.
func TestLatencyAppliesToLiveConnections(t *testing.T) {
	dst := echoServer(t)
	s, addr := startProxy(t, dst)
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	base := roundTrip(t, c)
	const delay = 300 * time.Millisecond
	if err := s.apply(context.Background(), latencyState(dst, int(delay.Milliseconds()))); err != nil {
		t.Fatal(err)
	}
	if d := roundTrip(t, c); d < delay {
		t.Fatalf("round trip with %v latency took %v (before: %v)", delay, d, base)
	}
	if err := s.apply(context.Background(), toxic.State{}); err != nil {
		t.Fatal(err)
	}
	// Without the toxic the round trip no longer pays the delay; a loaded
	// machine may be slow, but not by the whole delay every time.
	fast := false
	for range 5 {
		if roundTrip(t, c) < delay {
			fast = true
			break
		}
	}
	if !fast {
		t.Fatal("round trips stayed slower than the removed latency")
	}
	if got := s.current(); len(got.Routes) != 1 || len(got.Routes[0].Toxics) != 0 {
		t.Fatalf("state after removal = %+v", got)
	}
}

// reset_peer added to a live connection resets it (RST: the client's read
// fails with ECONNRESET, not a clean EOF).
func TestResetPeerOnLiveConnection(t *testing.T) {
	dst := echoServer(t)
	s, addr := startProxy(t, dst)
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c)
	st := toxic.State{Routes: []toxic.Route{{Addr: dst.Addr(), Toxics: []toxic.Toxic{{
		Name: "reset_peer_downstream", Type: "reset_peer", Stream: "downstream", Toxicity: 1,
		Attributes: map[string]any{"timeout": 0},
	}}}}}
	if err := s.apply(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("ping\n"))
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after reset_peer: %v, want ECONNRESET", err)
	}
}

// Bad states are refused with the reason, and nothing is applied.
func TestApplyRejectsBadState(t *testing.T) {
	s, _ := startProxy(t, netip.MustParseAddrPort("127.0.0.1:1"))
	for _, tc := range []struct {
		st   toxic.State
		want string
	}{
		{toxic.State{Routes: []toxic.Route{{Addr: netip.MustParseAddr("::1")}}}, "IPv4"},
		{toxic.State{Routes: []toxic.Route{{Addr: netip.MustParseAddr("10.0.0.1"), Toxics: []toxic.Toxic{{Name: "x", Type: "latency", Stream: "sideways", Toxicity: 1}}}}}, "neither upstream"},
		{toxic.State{Routes: []toxic.Route{{Addr: netip.MustParseAddr("10.0.0.1"), Toxics: []toxic.Toxic{{Name: "x", Type: "latency", Stream: "upstream", Toxicity: 0}}}}}, "toxicity"},
		{toxic.State{Routes: []toxic.Route{{Addr: netip.MustParseAddr("10.0.0.1"), Toxics: []toxic.Toxic{{Name: "x", Type: "nonsense", Stream: "upstream", Toxicity: 1}}}}}, "invalid toxic type"},
	} {
		err := s.apply(context.Background(), tc.st)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tc.want)) {
			t.Errorf("apply(%+v) = %v, want %q", tc.st, err, tc.want)
		}
	}
}
