// Package sshx is the queen's SSH client for driving hives: key
// authentication, host keys always verified against a known_hosts file,
// connect and command timeouts, atomic SFTP uploads and a per-host session
// limit.
//
// Tests run a real in-process SSH server (package sshtest):
// go test ./internal/sshx/...
package sshx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Defaults used when Config leaves a field zero.
const (
	DefaultPort           = 22
	DefaultConnectTimeout = 10 * time.Second
	DefaultCommandTimeout = 60 * time.Second
	// DefaultMaxOutput bounds what Run keeps of each of stdout and stderr.
	DefaultMaxOutput = 64 << 20
)

// Config says how to reach one host.
type Config struct {
	Host string
	Port int // default 22
	User string
	// IdentityFile is an unencrypted private key (OpenSSH or PEM). Signer,
	// when set, is used instead.
	IdentityFile string
	Signer       ssh.Signer
	// KnownHostsFile is required: host keys are always verified.
	KnownHostsFile string
	// HostKeyAlias is the name looked up in known_hosts (default Host). With a
	// port other than 22 both "name" and "[name]:port" entries are accepted.
	HostKeyAlias   string
	ConnectTimeout time.Duration // TCP connect + SSH handshake; default 10s
	CommandTimeout time.Duration // each Run, and each Upload as a whole; default 60s
	MaxOutput      int           // bytes kept per stream by Run; default 64 MiB
}

// Client is one authenticated SSH connection. It is safe for concurrent use;
// each Run or Upload opens its own session.
type Client struct {
	cfg   Config
	label string // "user@host:port", the prefix of every error
	conn  *ssh.Client

	closeOnce sync.Once
	closeErr  error
}

// AuthError: the server refused every key we offered.
type AuthError struct {
	User, Host string
	Port       int
	Err        error
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("ssh %s@%s:%d: authentication failed: %v", e.User, e.Host, e.Port, e.Err)
}
func (e *AuthError) Unwrap() error { return e.Err }

// HostKeyError: the server's host key is unknown or does not match known_hosts.
type HostKeyError struct {
	Host      string // the name looked up in known_hosts
	Addr      string // host:port dialed
	Unknown   bool   // true: no entry for Host; false: an entry exists and differs
	Revoked   bool   // the server's key is marked @revoked in known_hosts
	Key       ssh.PublicKey
	KnownFile string
}

func (e *HostKeyError) Error() string {
	fp := ""
	if e.Key != nil {
		fp = " (" + e.Key.Type() + " " + ssh.FingerprintSHA256(e.Key) + ")"
	}
	if e.Revoked {
		return fmt.Sprintf("ssh %s: host key for %q is revoked: the server's key%s is marked @revoked in %s", e.Addr, e.Host, fp, e.KnownFile)
	}
	if e.Unknown {
		return fmt.Sprintf("ssh %s: host key for %q is unknown: no entry in %s%s", e.Addr, e.Host, e.KnownFile, fp)
	}
	return fmt.Sprintf("ssh %s: host key mismatch for %q: the server's key%s differs from %s (possible man-in-the-middle)", e.Addr, e.Host, fp, e.KnownFile)
}

// TimeoutError: connecting or a command took longer than allowed.
type TimeoutError struct {
	Op    string // "connect", "command", "upload"
	Label string // "user@host:port"
	Cmd   string // for Op "command"
	After time.Duration
}

func (e *TimeoutError) Error() string {
	switch e.Op {
	case "command":
		return fmt.Sprintf("ssh %s: command timed out after %s: %s", e.Label, e.After, e.Cmd)
	default:
		return fmt.Sprintf("ssh %s: %s timed out after %s", e.Label, e.Op, e.After)
	}
}

// Timeout lets callers treat it like a net.Error timeout.
func (e *TimeoutError) Timeout() bool { return true }

// Result of a remote command. A non-zero ExitCode is not an error.
type Result struct {
	ExitCode int    // -1 when the command died from a signal (see Signal)
	Signal   string // e.g. "KILL", when the remote reported one
	Stdout   []byte
	Stderr   []byte
	// Truncated is set when a stream exceeded Config.MaxOutput; the first
	// MaxOutput bytes are kept.
	Truncated bool
}

// Dial connects and authenticates, honouring ctx and cfg.ConnectTimeout for
// both the TCP connect and the SSH handshake.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = DefaultCommandTimeout
	}
	if cfg.MaxOutput <= 0 {
		cfg.MaxOutput = DefaultMaxOutput
	}
	if cfg.HostKeyAlias == "" {
		cfg.HostKeyAlias = cfg.Host
	}
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	label := cfg.User + "@" + addr
	switch {
	case cfg.Host == "":
		return nil, errors.New("ssh: no host given")
	case cfg.User == "":
		return nil, fmt.Errorf("ssh %s: no user given", addr)
	case cfg.Port < 1 || cfg.Port > 65535:
		return nil, fmt.Errorf("ssh %s: port %d out of range", label, cfg.Port)
	case cfg.KnownHostsFile == "":
		return nil, fmt.Errorf("ssh %s: no known_hosts file configured (host keys are always verified)", label)
	}
	signer := cfg.Signer
	if signer == nil {
		if cfg.IdentityFile == "" {
			return nil, fmt.Errorf("ssh %s: no identity file or signer configured", label)
		}
		pem, err := os.ReadFile(cfg.IdentityFile)
		if err != nil {
			return nil, fmt.Errorf("ssh %s: read identity file: %w", label, err)
		}
		signer, err = ssh.ParsePrivateKey(pem)
		if err != nil {
			return nil, fmt.Errorf("ssh %s: parse identity file %s: %w", label, cfg.IdentityFile, err)
		}
	}
	hk, err := newHostKeyChecker(cfg, addr)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", label, err)
	}

	timeoutErr := &TimeoutError{Op: "connect", Label: label, After: cfg.ConnectTimeout}
	dctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		if isTimeout(err) {
			// The dialer's deadline (dctx's) can fire a moment before dctx
			// reports it; let the context catch up so that the checks below
			// say which deadline ended the connect.
			select {
			case <-dctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ssh %s: connect: %w", label, ctx.Err())
		}
		if dctx.Err() != nil {
			return nil, timeoutErr
		}
		return nil, fmt.Errorf("ssh %s: connect: %w", label, err)
	}

	// The handshake has no context of its own: a deadline bounds it, and a
	// watcher closes the socket if ctx ends first.
	_ = nc.SetDeadline(time.Now().Add(cfg.ConnectTimeout))
	stop := context.AfterFunc(dctx, func() { nc.Close() })
	cc, chans, reqs, err := ssh.NewClientConn(nc, addr, &ssh.ClientConfig{
		User:              cfg.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   hk.check,
		HostKeyAlgorithms: hk.algorithms,
		Timeout:           cfg.ConnectTimeout,
	})
	stopped := stop()
	if err != nil {
		nc.Close()
		switch {
		case hk.err != nil:
			return nil, hk.err
		case ctx.Err() != nil:
			return nil, fmt.Errorf("ssh %s: handshake: %w", label, ctx.Err())
		case !stopped || isTimeout(err):
			return nil, timeoutErr
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, &AuthError{User: cfg.User, Host: cfg.Host, Port: cfg.Port, Err: errors.New("server refused the key " + ssh.FingerprintSHA256(signer.PublicKey()))}
		}
		return nil, fmt.Errorf("ssh %s: handshake: %w", label, err)
	}
	if !stopped {
		// ctx ended just as the handshake finished; the socket is closed.
		cc.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ssh %s: handshake: %w", label, ctx.Err())
		}
		return nil, timeoutErr
	}
	_ = nc.SetDeadline(time.Time{})
	return &Client{cfg: cfg, label: label, conn: ssh.NewClient(cc, chans, reqs)}, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// hostKeyChecker verifies the server key against known_hosts under the
// configured alias, and remembers a typed error for Dial to return (the
// handshake error would otherwise bury it in text).
type hostKeyChecker struct {
	cfg        Config
	addr       string
	cb         ssh.HostKeyCallback
	names      []string // "alias:22" and, for other ports, "alias:port"
	algorithms []string
	err        *HostKeyError
}

func newHostKeyChecker(cfg Config, addr string) (*hostKeyChecker, error) {
	cb, err := knownhosts.New(cfg.KnownHostsFile)
	if err != nil {
		return nil, fmt.Errorf("load known_hosts: %w", err)
	}
	h := &hostKeyChecker{cfg: cfg, addr: addr, cb: cb}
	h.names = []string{net.JoinHostPort(cfg.HostKeyAlias, "22")}
	if cfg.Port != 22 {
		h.names = append(h.names, net.JoinHostPort(cfg.HostKeyAlias, strconv.Itoa(cfg.Port)))
	}
	// Offer only the key types known_hosts holds for this host. Otherwise the
	// server may pick, say, its RSA key while we know only its ed25519 one,
	// and a good host would look like a mismatch.
	seen := map[string]bool{}
	for _, n := range h.names {
		var ke *knownhosts.KeyError
		if err := cb(n, dummyAddr, dummyKey{}); errors.As(err, &ke) {
			for _, k := range ke.Want {
				for _, a := range algorithmsFor(k.Key.Type()) {
					if !seen[a] {
						seen[a] = true
						h.algorithms = append(h.algorithms, a)
					}
				}
			}
		}
	}
	return h, nil
}

func algorithmsFor(keyType string) []string {
	if keyType == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{keyType}
}

func (h *hostKeyChecker) check(_ string, remote net.Addr, key ssh.PublicKey) error {
	mismatch, revoked := false, false
	for _, n := range h.names {
		err := h.cb(n, remote, key)
		if err == nil {
			return nil
		}
		var ke *knownhosts.KeyError
		if errors.As(err, &ke) && len(ke.Want) > 0 {
			mismatch = true
		}
		var re *knownhosts.RevokedError
		if errors.As(err, &re) {
			mismatch, revoked = true, true
			break
		}
	}
	h.err = &HostKeyError{Host: h.cfg.HostKeyAlias, Addr: h.addr, Unknown: !mismatch, Revoked: revoked, Key: key, KnownFile: h.cfg.KnownHostsFile}
	return h.err
}

var dummyAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}

// dummyKey matches no known key, so the callback answers with the list of
// keys it does know.
type dummyKey struct{}

func (dummyKey) Type() string                            { return "rbee-probe" }
func (dummyKey) Marshal() []byte                         { return []byte("rbee-probe") }
func (dummyKey) Verify(_ []byte, _ *ssh.Signature) error { return errors.New("probe key") }

// Label is "user@host:port", the prefix of the client's errors.
func (c *Client) Label() string { return c.label }

// Close closes the connection; later calls return the first result.
func (c *Client) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.conn.Close() })
	return c.closeErr
}

// Run executes cmd (through the remote user's shell) and collects its exit
// code and output. Only transport problems and timeouts are errors. When
// CommandTimeout or ctx ends first the remote process is sent SIGKILL, the
// session is closed and a *TimeoutError (or ctx's error) is returned.
func (c *Client) Run(ctx context.Context, cmd string) (Result, error) {
	tctx, cancel := context.WithTimeout(ctx, c.cfg.CommandTimeout)
	defer cancel()
	ended := func() error {
		if ctx.Err() != nil {
			return fmt.Errorf("ssh %s: command %q: %w", c.label, cmd, ctx.Err())
		}
		return &TimeoutError{Op: "command", Label: c.label, Cmd: cmd, After: c.cfg.CommandTimeout}
	}

	sess, err := c.newSession(tctx)
	if err != nil {
		if tctx.Err() != nil {
			return Result{}, ended()
		}
		return Result{}, fmt.Errorf("ssh %s: open session: %w", c.label, err)
	}
	defer sess.Close()
	stdout := &capBuffer{max: c.cfg.MaxOutput}
	stderr := &capBuffer{max: c.cfg.MaxOutput}
	sess.Stdout, sess.Stderr = stdout, stderr
	if err := sess.Start(cmd); err != nil {
		return Result{}, fmt.Errorf("ssh %s: start %q: %w", c.label, cmd, err)
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()

	select {
	case err = <-done:
	case <-tctx.Done():
		// Signal first (OpenSSH >= 7.9 delivers it), then close: closing
		// alone only hangs up the pipes and leaves a busy process running.
		_ = sess.Signal(ssh.SIGKILL)
		sess.Close()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
		return Result{}, ended()
	}
	res := Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), Truncated: stdout.truncated || stderr.truncated}
	var ee *ssh.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.ExitCode = ee.ExitStatus()
		if ee.Signal() != "" {
			res.ExitCode, res.Signal = -1, ee.Signal()
		}
	default:
		return res, fmt.Errorf("ssh %s: command %q: %w", c.label, cmd, err)
	}
	return res, nil
}

// newSession opens a session channel, giving up when ctx ends. A server that
// does not answer a channel open is broken: the connection is closed then so
// the abandoned attempt does not linger.
func (c *Client) newSession(ctx context.Context) (*ssh.Session, error) {
	type result struct {
		s   *ssh.Session
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := c.conn.NewSession()
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-ctx.Done():
		c.Close()
		return nil, ctx.Err()
	}
}

// capBuffer keeps the first max bytes written and drops the rest, so that a
// runaway command cannot exhaust the queen's memory.
// The buffer is a field, not embedded: an embedded bytes.Buffer would lend
// capBuffer its ReadFrom, and io.Copy would bypass the cap.
type capBuffer struct {
	buf       bytes.Buffer
	max       int
	truncated bool
}

func (b *capBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room < len(p) {
		b.truncated = true
		if room > 0 {
			b.buf.Write(p[:room])
		}
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *capBuffer) Bytes() []byte { return b.buf.Bytes() }

// ExpandHomePath turns a "~/"-relative remote path into the path relative to
// the remote user's home that both sshd exec sessions and SFTP resolve (both
// start in the home directory): "~/.local/bin/x" → ".local/bin/x", "~" → ".".
// Other paths are returned unchanged.
func ExpandHomePath(p string) string {
	switch {
	case p == "~" || p == "~/":
		return "."
	case strings.HasPrefix(p, "~/"):
		return strings.TrimLeft(p[2:], "/")
	}
	return p
}

// ShellQuote quotes s for a POSIX shell command line.
func ShellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:=@%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
