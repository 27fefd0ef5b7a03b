package testrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
)

// EngineProxy is a second listener for a local Docker engine: a TCP port
// on 127.0.0.1 that forwards every connection to the engine's unix socket.
// With DOCKER_HOST=tcp://<Addr> a run reaches the same engine the way a
// remote one is reached, which proves the harness and the targets honour
// DOCKER_HOST without needing a second machine.
type EngineProxy struct {
	Addr string // "127.0.0.1:PORT"
	ln   net.Listener
	sock string
	wg   sync.WaitGroup
}

// LocalSocket returns the unix socket of the engine DOCKER_HOST names, or
// the default one; an engine reached over TCP already has no socket here.
func LocalSocket() (string, error) {
	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		return "/var/run/docker.sock", nil
	}
	u, err := url.Parse(host)
	if err != nil || u.Scheme != "unix" {
		return "", fmt.Errorf("DOCKER_HOST=%s is not a local unix socket: the engine proxy needs the engine on this host", host)
	}
	return u.Path, nil
}

// StartEngineProxy listens on an ephemeral 127.0.0.1 port and forwards to
// the unix socket sock until ctx ends or Close is called.
func StartEngineProxy(ctx context.Context, sock string) (*EngineProxy, error) {
	if _, err := os.Stat(sock); err != nil {
		return nil, fmt.Errorf("engine proxy: no engine socket: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &EngineProxy{Addr: ln.Addr().String(), ln: ln, sock: sock}
	go func() { <-ctx.Done(); p.Close() }()
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// DockerHost is the DOCKER_HOST value that reaches the engine through p.
func (p *EngineProxy) DockerHost() string { return "tcp://" + p.Addr }

func (p *EngineProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *EngineProxy) forward(c net.Conn) {
	defer c.Close()
	e, err := net.Dial("unix", p.sock)
	if err != nil {
		return
	}
	defer e.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Half-close so hijacked streams (exec, attach) see EOF in turn.
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(e, c)
	go pipe(c, e)
	<-done
	<-done
}

// Close stops accepting connections.
func (p *EngineProxy) Close() error {
	err := p.ln.Close()
	if errors.Is(err, net.ErrClosed) || (err != nil && strings.Contains(err.Error(), "use of closed")) {
		return nil
	}
	return err
}
