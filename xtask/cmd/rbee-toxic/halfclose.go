package main

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// conn is one proxied connection: the client's socket (accepted from the
// redirect) and the proxy's socket to the original destination.
//
// toxiproxy ends a direction by closing its destination socket outright.
// That loses a half-close: a client that sends its request and then
// shutdown(SHUT_WR) (as `nc -N`, an HTTP/1.0 client or a "read until EOF"
// upload does) would have the proxy close the server's socket completely, so
// the server's answer is thrown away (the proxy's closed socket answers it
// with RST) and the client sees EOF without it. A transparent proxy must
// forward the FIN as a FIN and keep the other direction going. So the
// links get ends wrapped here: when a direction ended because its source
// sent EOF, closing the destination is a CloseWrite (the FIN is passed on);
// once both directions ended, both sockets are closed. When a toxic ended
// the direction by itself (limit_data, reset_peer) or a write failed, the
// whole connection is closed, as toxiproxy does.
type conn struct {
	client, upstream *net.TCPConn

	// reset is set once SO_LINGER 0 is on both sockets (a reset_peer
	// toxic): then every close is a full close, which sends RST.
	reset atomic.Bool

	mu    sync.Mutex
	ended int // directions whose destination was closed
	done  bool
}

// eofReader is a direction's source: it records that the peer sent EOF (a
// FIN), as against the direction being stopped by a toxic or an error.
type eofReader struct {
	c   *net.TCPConn
	eof atomic.Bool
}

func (r *eofReader) Read(p []byte) (int, error) {
	n, err := r.c.Read(p)
	if errors.Is(err, io.EOF) {
		r.eof.Store(true)
	}
	return n, err
}

// halfCloser is a direction's destination.
type halfCloser struct {
	c   *conn
	dst *net.TCPConn
	src *eofReader // the same direction's source
}

func (w *halfCloser) Write(p []byte) (int, error) {
	n, err := w.dst.Write(p)
	if err != nil {
		// The destination is gone (reset, or closed for good): the
		// connection cannot carry on in either direction.
		w.c.closeAll()
	}
	return n, err
}

// Close ends the direction: a forwarded FIN when its source sent one,
// otherwise (a toxic cut it, or reset) the end of the whole connection.
func (w *halfCloser) Close() error {
	if !w.src.eof.Load() || w.c.reset.Load() {
		w.c.closeAll()
		return nil
	}
	err := w.dst.CloseWrite()
	w.c.mu.Lock()
	w.c.ended++
	both := w.c.ended == 2
	w.c.mu.Unlock()
	if both || err != nil {
		w.c.closeAll()
	}
	return nil
}

func (c *conn) closeAll() {
	c.mu.Lock()
	done := c.done
	c.done = true
	c.mu.Unlock()
	if !done {
		c.client.Close()
		c.upstream.Close()
	}
}

// closed reports whether both sockets are closed (a closed socket refuses
// SetDeadline; toxiproxy sets no deadlines, so the probe changes nothing on
// a live one).
func (c *conn) closed() bool {
	return c.client.SetDeadline(time.Time{}) != nil && c.upstream.SetDeadline(time.Time{}) != nil
}

// setReset puts SO_LINGER 0 on both sockets, so that closing them sends
// RST, as toxiproxy does for connections that start with a reset_peer
// toxic; the proxy does it too for connections that were live when one
// was added.
func (c *conn) setReset() {
	c.reset.Store(true)
	_ = c.client.SetLinger(0)
	_ = c.upstream.SetLinger(0)
}

// ends returns the (source, destination) of the upstream direction and of
// the downstream one.
func (c *conn) ends() (upSrc io.Reader, upDst io.WriteCloser, downSrc io.Reader, downDst io.WriteCloser) {
	us := &eofReader{c: c.client}
	ds := &eofReader{c: c.upstream}
	return us, &halfCloser{c: c, dst: c.upstream, src: us}, ds, &halfCloser{c: c, dst: c.client, src: ds}
}
