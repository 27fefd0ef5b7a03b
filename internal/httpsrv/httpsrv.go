// Package httpsrv holds the HTTP server settings queen-rbee, rbee-hive and
// llm-worker-rbee share: header and body deadlines, an idle timeout, a
// header size limit and a cap on open connections, so that slow, idle or
// oversized clients cannot hold a server's memory or connections.
//
// There is deliberately no WriteTimeout or ReadTimeout: job streams (SSE)
// last as long as their job, and a connection-wide read deadline would
// cancel a streaming request's context when it expires. The body deadline
// is set per request instead, and lifted once the body has been read.
//
//	go test ./internal/httpsrv/
package httpsrv

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Limits are a server's bounds; zero fields take the defaults.
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers (default 10 s);
	// a connection that sends nothing is closed after it too.
	ReadHeaderTimeout time.Duration
	// BodyTimeout bounds reading a request's whole body (default 20 s:
	// the 1 MiB body limit at 50 KiB/s). A body trickled slower is cut:
	// the handler's read fails and the connection is closed.
	BodyTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long (default 2 min).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds request headers (default 64 KiB); more is 431.
	MaxHeaderBytes int
	// MaxConns caps open connections (default 1024). Further clients wait
	// in the kernel's accept queue until one closes.
	MaxConns int
}

// Defaults for Limits.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultBodyTimeout       = 20 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxConns          = 1024
)

func (l Limits) withDefaults() Limits {
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if l.BodyTimeout <= 0 {
		l.BodyTimeout = DefaultBodyTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
	}
	return l
}

// Server returns an http.Server for h with l's timeouts and header limit
// and a body deadline on every request that has a body.
func Server(h http.Handler, l Limits) *http.Server {
	l = l.withDefaults()
	return &http.Server{
		Handler:           BodyDeadline(h, l.BodyTimeout),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}

// Serve serves srv on ln capped at l.MaxConns connections.
func Serve(srv *http.Server, ln net.Listener, l Limits) error {
	return srv.Serve(LimitListener(ln, l.withDefaults().MaxConns))
}

// BodyDeadline sets a read deadline of d on the connection of each request
// with a body, and lifts it when the body has been read to its end, so a
// streaming response that follows is not cut.
func BodyDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || (r.ContentLength == 0 && len(r.TransferEncoding) == 0) {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(d)); err != nil {
			h.ServeHTTP(w, r) // not a real connection (a test recorder)
			return
		}
		r.Body = &deadlineBody{ReadCloser: r.Body, lift: func() { _ = rc.SetReadDeadline(time.Time{}) }}
		h.ServeHTTP(w, r)
	})
}

type deadlineBody struct {
	io.ReadCloser
	once sync.Once
	lift func()
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.once.Do(b.lift)
	}
	return n, err
}

// IsBodyTimeout reports whether err is a body read cut by the deadline.
func IsBodyTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// LimitListener returns a listener that has at most n connections open at
// once: Accept waits while n are open.
func LimitListener(ln net.Listener, n int) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	closeOnce sync.Once
	done      chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
