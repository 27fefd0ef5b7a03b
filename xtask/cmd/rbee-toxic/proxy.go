package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/stream"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/rbee-dev/rbee/xtask/toxic"
)

// server accepts redirected connections and runs each through the toxic
// chains of its destination's route.
type server struct {
	api     *toxiproxy.ApiServer
	resolve func(*net.TCPConn) (netip.AddrPort, error) // original destination
	dial    func(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
	seq     atomic.Uint64

	mu     sync.Mutex // guards routes and each route's applied/conns
	routes map[string]*route
}

// route is one destination's toxiproxy Proxy (only its ToxicCollection is
// used: the accept loop is ours, since the upstream differs per
// connection), the toxics applied to it, and its live connections.
type route struct {
	p       *toxiproxy.Proxy
	applied map[string]toxic.Toxic
	conns   map[string]*conn
}

func newServer(resolve func(*net.TCPConn) (netip.AddrPort, error), dial func(context.Context, netip.AddrPort) (net.Conn, error)) *server {
	logger := zerolog.New(os.Stderr).Level(zerolog.ErrorLevel)
	return &server{
		api:     toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), logger),
		resolve: resolve,
		dial:    dial,
		routes:  map[string]*route{},
	}
}

// routeLocked returns (creating) the route of key. The caller holds mu.
func (s *server) routeLocked(key string) *route {
	r := s.routes[key]
	if r == nil {
		r = &route{p: toxiproxy.NewProxy(s.api, key, toxic.ListenAddr, key), applied: map[string]toxic.Toxic{}, conns: map[string]*conn{}}
		s.routes[key] = r
	}
	return r
}

func (s *server) serve(ln net.Listener) error {
	self := ln.Addr().(*net.TCPAddr).AddrPort()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go s.handle(c.(*net.TCPConn), self)
	}
}

func (s *server) handle(c *net.TCPConn, self netip.AddrPort) {
	dst, err := s.resolve(c)
	if err != nil {
		fmt.Fprintf(os.Stderr, "connection from %s: %v\n", c.RemoteAddr(), err)
		c.Close()
		return
	}
	if dst == self || (dst.Port() == self.Port() && dst.Addr().IsLoopback()) {
		// Not redirected: someone dialled the proxy itself.
		c.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	up, err := s.dial(ctx, dst)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "connection from %s to %s: %v\n", c.RemoteAddr(), dst, err)
		c.Close()
		return
	}
	upc := up.(*net.TCPConn)
	name := fmt.Sprintf("%s>%s#%d", c.RemoteAddr(), dst, s.seq.Add(1))
	s.mu.Lock()
	s.sweepLocked()
	r := s.routes[dst.String()]
	if r == nil {
		r = s.routeLocked(dst.Addr().String())
	}
	cn := &conn{client: c, upstream: upc}
	r.conns[name] = cn
	// mu is held until the links run, so that apply cannot add a toxic
	// between the check below and StartLink.
	defer s.mu.Unlock()
	if r.hasReset() {
		// toxiproxy sets SO_LINGER 0 itself when a link starts with a
		// reset_peer toxic, and insists on the bare sockets then; the
		// connection is to be reset, so there is no half-close to keep.
		cn.setReset()
		r.p.Toxics.StartLink(s.api, name+"upstream", c, upc, stream.Upstream)
		r.p.Toxics.StartLink(s.api, name+"downstream", upc, c, stream.Downstream)
		return
	}
	us, ud, ds, dd := cn.ends()
	r.p.Toxics.StartLink(s.api, name+"upstream", us, ud, stream.Upstream)
	r.p.Toxics.StartLink(s.api, name+"downstream", ds, dd, stream.Downstream)
}

// sweepLocked forgets connections both of whose sockets are closed. The
// caller holds mu.
func (s *server) sweepLocked() {
	for _, r := range s.routes {
		for name, cn := range r.conns {
			if cn.closed() {
				delete(r.conns, name)
			}
		}
	}
}

func (r *route) hasReset() bool {
	for _, t := range r.applied {
		if t.Type == "reset_peer" {
			return true
		}
	}
	return false
}

// apply reconciles the routes with st: toxics not wanted (or changed) are
// removed, wanted ones added. toxiproxy updates every live link of a route
// before AddToxicJson/RemoveToxic return.
func (s *server) apply(ctx context.Context, st toxic.State) error {
	if err := st.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked()
	want := map[string]map[string]toxic.Toxic{}
	for _, rt := range st.Routes {
		m := map[string]toxic.Toxic{}
		for _, t := range rt.Toxics {
			m[t.Name] = t
		}
		want[rt.Key()] = m
		s.routeLocked(rt.Key())
	}
	for key, r := range s.routes {
		w := want[key]
		for name, t := range r.applied {
			if nt, ok := w[name]; ok && nt.Canonical() == t.Canonical() {
				continue
			}
			if err := r.p.Toxics.RemoveToxic(ctx, name); err != nil {
				return fmt.Errorf("route %s: remove %s: %w", key, name, err)
			}
			delete(r.applied, name)
		}
		names := make([]string, 0, len(w))
		for n := range w {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			t := w[name]
			if _, ok := r.applied[name]; ok {
				continue
			}
			if t.Type == "reset_peer" {
				for _, cn := range r.conns {
					cn.setReset()
				}
			}
			b, _ := json.Marshal(t)
			if _, err := r.p.Toxics.AddToxicJson(bytes.NewReader(b)); err != nil {
				return fmt.Errorf("route %s: add %s: %w", key, name, err)
			}
			r.applied[name] = t
		}
	}
	return nil
}

// current is the applied state, for GET /state.
func (s *server) current() toxic.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	var st toxic.State
	keys := make([]string, 0, len(s.routes))
	for k := range s.routes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		r := s.routes[k]
		rt := toxic.Route{}
		if ap, err := netip.ParseAddrPort(k); err == nil {
			rt.Addr, rt.Port = ap.Addr(), ap.Port()
		} else if a, err := netip.ParseAddr(k); err == nil {
			rt.Addr = a
		}
		for _, t := range r.applied {
			rt.Toxics = append(rt.Toxics, t)
		}
		sort.Slice(rt.Toxics, func(i, j int) bool { return rt.Toxics[i].Name < rt.Toxics[j].Name })
		st.Routes = append(st.Routes, rt)
	}
	return st
}

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /state", func(w http.ResponseWriter, r *http.Request) {
		var st toxic.State
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&st); err != nil {
			http.Error(w, "bad state: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := s.apply(r.Context(), st); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "applied %s\n", st)
	})
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(s.current())
	})
	return mux
}

// originalDst is the destination the connection had before REDIRECT
// (getsockopt SOL_IP SO_ORIGINAL_DST: a sockaddr_in, read through the
// IPv6Mreq getter, which has the right size).
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var ap netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			serr = fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w (not a redirected connection?)", err)
			return
		}
		port := uint16(m.Multiaddr[2])<<8 | uint16(m.Multiaddr[3])
		ap = netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.Multiaddr[4:8])), port)
	})
	if err != nil {
		return ap, err
	}
	return ap, serr
}

// markedDialer dials with SO_MARK = mark (needs CAP_NET_ADMIN).
func markedDialer(mark int) func(context.Context, netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("setsockopt SO_MARK: %w", serr)
		}
		return nil
	}}
	return func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
		return d.DialContext(ctx, "tcp4", addr.String())
	}
}
