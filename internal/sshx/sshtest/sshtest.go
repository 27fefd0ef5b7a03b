// Package sshtest runs a real SSH server in-process for tests of package
// sshx: public-key auth against a fixed set of keys, "exec" requests run with
// `sh -c` in a home directory, "signal" requests (KILL the process group) and
// the "sftp" subsystem. It listens on 127.0.0.1 only.
//
// The SFTP subsystem runs out of process, as OpenSSH's sftp-server does:
// each session re-executes the running binary as an SFTP helper (see
// sftp.go), so the files it writes are open in that helper only and never
// in the test process, whose exec sessions fork concurrently.
package sshtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Options for Start. Zero values get defaults.
type Options struct {
	HostKey        ssh.Signer      // default: a fresh ed25519 key
	AuthorizedKeys []ssh.PublicKey // keys allowed to log in (any user name)
	Home           string          // cwd of commands and of SFTP; required
}

// Server is a running test SSH server.
type Server struct {
	Addr    string // "127.0.0.1:port"
	Host    string // "127.0.0.1"
	Port    int
	HostKey ssh.Signer
	Home    string

	ln     net.Listener
	config *ssh.ServerConfig
	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

// NewSigner returns a fresh ed25519 signer.
func NewSigner() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

// MustSigner is NewSigner for tests.
func MustSigner(t testing.TB) ssh.Signer {
	t.Helper()
	s, err := NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Start starts a server; the error-returning twin of New.
func Start(opts Options) (*Server, error) {
	if opts.Home == "" {
		return nil, errors.New("sshtest: Options.Home is required")
	}
	if opts.HostKey == nil {
		k, err := NewSigner()
		if err != nil {
			return nil, err
		}
		opts.HostKey = k
	}
	allowed := map[string]bool{}
	for _, k := range opts.AuthorizedKeys {
		allowed[string(k.Marshal())] = true
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if allowed[string(key.Marshal())] {
				return &ssh.Permissions{}, nil
			}
			return nil, errors.New("key not authorized")
		},
	}
	cfg.AddHostKey(opts.HostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().(*net.TCPAddr)
	s := &Server{Addr: addr.String(), Host: "127.0.0.1", Port: addr.Port, HostKey: opts.HostKey, Home: opts.Home,
		ln: ln, config: cfg, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// New starts a server with a fresh host key and home directory, accepting
// the given client keys, and closes it when the test ends.
func New(t testing.TB, authorized ...ssh.PublicKey) *Server {
	t.Helper()
	s, err := Start(Options{AuthorizedKeys: authorized, Home: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// KnownHostsLine is a known_hosts line binding name (a host name, or
// "[host]:port" form via knownhosts.Normalize) to the server's host key.
func (s *Server) KnownHostsLine(name string) string {
	return knownhosts.Line([]string{knownhosts.Normalize(name)}, s.HostKey.PublicKey())
}

// Close stops accepting, drops every connection and waits for handlers.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.handleConn(c)
		}()
	}
}

func (s *Server) handleConn(c net.Conn) {
	sc, chans, reqs, err := ssh.NewServerConn(c, s.config)
	if err != nil {
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	var wg sync.WaitGroup
	defer wg.Wait()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handleSession(ch, creqs)
		}()
	}
}

func (s *Server) handleSession(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	var (
		mu   sync.Mutex
		proc *os.Process
	)
	exited := make(chan struct{})
	started := false
	for {
		var req *ssh.Request
		var ok bool
		select {
		case req, ok = <-reqs:
		case <-exited:
			return
		}
		if !ok {
			// Client went away: make sure nothing keeps running.
			mu.Lock()
			if proc != nil {
				_ = syscall.Kill(-proc.Pid, syscall.SIGKILL)
			}
			mu.Unlock()
			return
		}
		switch req.Type {
		case "exec":
			var p struct{ Command string }
			if started || ssh.Unmarshal(req.Payload, &p) != nil {
				req.Reply(false, nil)
				continue
			}
			cmd := exec.Command("/bin/sh", "-c", p.Command)
			cmd.Dir = s.Home
			cmd.Env = append(os.Environ(), "HOME="+s.Home)
			cmd.Stdout = ch
			cmd.Stderr = ch.Stderr()
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := cmd.Start(); err != nil {
				req.Reply(false, nil)
				continue
			}
			started = true
			mu.Lock()
			proc = cmd.Process
			mu.Unlock()
			req.Reply(true, nil)
			go func() {
				err := cmd.Wait()
				sendExit(ch, cmd.ProcessState, err)
				close(exited)
			}()
		case "signal":
			var p struct{ Signal string }
			_ = ssh.Unmarshal(req.Payload, &p)
			mu.Lock()
			if proc != nil && p.Signal == "KILL" {
				_ = syscall.Kill(-proc.Pid, syscall.SIGKILL)
			}
			mu.Unlock()
			if req.WantReply {
				req.Reply(true, nil)
			}
		case "subsystem":
			var p struct{ Name string }
			if started || ssh.Unmarshal(req.Payload, &p) != nil || p.Name != "sftp" {
				req.Reply(false, nil)
				continue
			}
			started = true
			req.Reply(true, nil)
			go ssh.DiscardRequests(reqs)
			_ = s.serveSFTP(ch)
			return
		default:
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}
}

func sendExit(ch ssh.Channel, ps *os.ProcessState, err error) {
	if ps == nil {
		status := make([]byte, 4)
		binary.BigEndian.PutUint32(status, 127)
		ch.SendRequest("exit-status", false, status)
		return
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		name := map[syscall.Signal]string{syscall.SIGKILL: "KILL", syscall.SIGTERM: "TERM", syscall.SIGINT: "INT"}[ws.Signal()]
		if name == "" {
			name = strconv.Itoa(int(ws.Signal()))
		}
		ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Error      string
			Lang       string
		}{Signal: name}))
		return
	}
	status := make([]byte, 4)
	binary.BigEndian.PutUint32(status, uint32(ps.ExitCode()))
	ch.SendRequest("exit-status", false, status)
}
