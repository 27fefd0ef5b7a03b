package sshx

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// stallProxy forwards TCP to target until stall is closed; then it stops
// reading from either side, like a network that drops everything: the
// client's writes fill the socket buffers and block.
type stallProxy struct {
	ln    net.Listener
	stall chan struct{}
	once  sync.Once
	mu    sync.Mutex
	conns []net.Conn
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, stall: make(chan struct{})}
	t.Cleanup(p.close)
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go p.pipe(out, in)
			go p.pipe(in, out)
		}
	}()
	return p
}

func (p *stallProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 4096)
	for {
		select {
		case <-p.stall:
			return // stop reading: the sender's buffers fill up
		default:
		}
		n, err := src.Read(buf)
		if n > 0 {
			select {
			case <-p.stall:
				return
			default:
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *stallProxy) Stall() { p.once.Do(func() { close(p.stall) }) }

func (p *stallProxy) close() {
	p.Stall()
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// An upload whose connection stalls mid-transfer (the network drops
// everything) ends with a timeout soon after CommandTimeout (plus the
// cleanup grace), instead of hanging for as long as TCP retries; the final
// path is never written.
func TestUploadEndsWhenTheTransportStalls(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the cleanup grace")
	}
	f := newFixture(t)
	p := newStallProxy(t, net.JoinHostPort(f.srv.Host, strconv.Itoa(f.srv.Port)))
	cfg := f.config()
	_, port, _ := net.SplitHostPort(p.ln.Addr().String())
	cfg.Port, _ = strconv.Atoi(port)
	cfg.CommandTimeout = time.Second
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Stall after the first megabyte has been read from the source; the
	// source holds far more than the socket buffers can absorb.
	src := &stallAfter{r: &blockingReader{n: 64 << 20, unblock: make(chan struct{})}, after: 1 << 20, stall: p.Stall}
	done := make(chan error, 1)
	t0 := time.Now()
	go func() { done <- c.Upload(context.Background(), src, "~/.local/bin/rbee-hive", 0o755) }()
	select {
	case err = <-done:
	case <-time.After(cfg.CommandTimeout + cleanupGrace + 10*time.Second):
		t.Fatal("Upload still blocked long after CommandTimeout and the cleanup grace")
	}
	var te *TimeoutError
	if !errors.As(err, &te) {
		t.Fatalf("want a *TimeoutError, got %T %v", err, err)
	}
	t.Logf("stalled upload ended after %v: %v", time.Since(t0).Round(time.Millisecond), err)
	if _, err := os.Stat(filepath.Join(f.srv.Home, ".local/bin/rbee-hive")); !os.IsNotExist(err) {
		t.Fatalf("final path exists after a stalled upload: %v", err)
	}
}

// stallAfter calls stall once more than after bytes were read.
type stallAfter struct {
	r     io.Reader
	n     int
	after int
	stall func()
}

func (s *stallAfter) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += n
	if s.n > s.after {
		s.stall()
	}
	return n, err
}
