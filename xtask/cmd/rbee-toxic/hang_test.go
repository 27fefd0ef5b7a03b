package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/xtask/toxic"
)

// answerAndClose writes msg to every connection, then closes it.
func answerAndClose(t *testing.T, msg string) netip.AddrPort {
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
			_, _ = io.WriteString(c, msg)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func hangState(dst netip.AddrPort, on bool) toxic.State {
	rt := toxic.Route{Addr: dst.Addr(), Toxics: []toxic.Toxic{}}
	if on {
		rt.Toxics = append(rt.Toxics, toxic.Toxic{Name: "hang_downstream", Type: "hang", Stream: "downstream", Toxicity: 1, Attributes: map[string]any{}})
	}
	return toxic.State{Routes: []toxic.Route{rt}}
}

// hang delivers nothing and holds the connection open although the server
// answered and closed (the read times out, no EOF); without it the same
// exchange gets the answer and EOF; removing it closes the held connection.
func TestHangHoldsConnectionOpen(t *testing.T) {
	dst := answerAndClose(t, "hello")
	s, addr := startProxy(t, dst)
	read := func(c net.Conn, d time.Duration) (string, error) {
		_ = c.SetReadDeadline(time.Now().Add(d))
		b, err := io.ReadAll(c)
		return string(b), err
	}
	c0, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := read(c0, 30*time.Second); got != "hello" || err != nil {
		t.Fatalf("control: %q, %v; want the answer and EOF", got, err)
	}
	c0.Close()

	if err := s.apply(context.Background(), hangState(dst, true)); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := read(c, time.Second); got != "" || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("hung: %q, %v; want nothing and the read deadline, not EOF", got, err)
	}
	if err := s.apply(context.Background(), hangState(dst, false)); err != nil {
		t.Fatal(err)
	}
	if got, err := read(c, 30*time.Second); got != "" || err != nil {
		t.Fatalf("after removing hang: %q, %v; want EOF with nothing (the data was dropped)", got, err)
	}
}
