package sshx

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/sshx/sshtest"
	"golang.org/x/crypto/ssh"
)

// fixture is one test server with an authorized client key and a known_hosts
// file that names the server "hive-1".
type fixture struct {
	srv        *sshtest.Server
	key        ssh.Signer
	knownHosts string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	key := sshtest.MustSigner(t)
	srv := sshtest.New(t, key.PublicKey())
	f := &fixture{srv: srv, key: key, knownHosts: filepath.Join(t.TempDir(), "known_hosts")}
	f.writeKnownHosts(t, srv.KnownHostsLine("hive-1"))
	return f
}

func (f *fixture) writeKnownHosts(t *testing.T, lines ...string) {
	t.Helper()
	if err := os.WriteFile(f.knownHosts, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) config() Config {
	return Config{Host: f.srv.Host, Port: f.srv.Port, User: "rbee", Signer: f.key, KnownHostsFile: f.knownHosts,
		HostKeyAlias: "hive-1", ConnectTimeout: 5 * time.Second, CommandTimeout: 20 * time.Second}
}

func (f *fixture) dial(t *testing.T) *Client {
	t.Helper()
	c, err := Dial(context.Background(), f.config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRunSeparatesStreamsAndExitCode(t *testing.T) {
	c := newFixture(t).dial(t)
	cases := []struct {
		cmd            string
		code           int
		stdout, stderr string
	}{
		{"echo out; echo err >&2", 0, "out\n", "err\n"},
		{"echo partial; exit 3", 3, "partial\n", ""},
		{"printf 'a\\0b'; exit 255", 255, "a\x00b", ""},
		{"pwd", 0, c.cfg.Host, ""}, // replaced below: commands start in the home directory
	}
	cases[3].stdout = newHomeCheck(t, c)
	for _, tc := range cases {
		res, err := c.Run(context.Background(), tc.cmd)
		if err != nil {
			t.Fatalf("%q: %v", tc.cmd, err)
		}
		if res.ExitCode != tc.code || string(res.Stdout) != tc.stdout || string(res.Stderr) != tc.stderr {
			t.Errorf("%q: got exit %d stdout %q stderr %q; want %d %q %q", tc.cmd, res.ExitCode, res.Stdout, res.Stderr, tc.code, tc.stdout, tc.stderr)
		}
	}
}

// newHomeCheck returns what `pwd` must print: the server's home directory.
func newHomeCheck(t *testing.T, c *Client) string {
	t.Helper()
	res, err := c.Run(context.Background(), "cd ~ && pwd")
	if err != nil {
		t.Fatal(err)
	}
	return string(res.Stdout)
}

func TestRunLargeOutput(t *testing.T) {
	c := newFixture(t).dial(t)
	res, err := c.Run(context.Background(), "head -c 1048576 /dev/zero | tr '\\0' a; head -c 70000 /dev/zero | tr '\\0' b >&2")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Stdout) != 1<<20 || bytes.Count(res.Stdout, []byte("a")) != 1<<20 {
		t.Fatalf("stdout: %d bytes", len(res.Stdout))
	}
	if len(res.Stderr) != 70000 || bytes.Count(res.Stderr, []byte("b")) != 70000 {
		t.Fatalf("stderr: %d bytes", len(res.Stderr))
	}
	if res.Truncated {
		t.Fatal("Truncated set")
	}
}

func TestRunOutputCap(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.MaxOutput = 1000
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Run(context.Background(), "head -c 5000 /dev/zero")
	if err != nil || len(res.Stdout) != 1000 || !res.Truncated {
		t.Fatalf("len %d truncated %v err %v", len(res.Stdout), res.Truncated, err)
	}
}

func TestRunConcurrentOnOneClient(t *testing.T) {
	c := newFixture(t).dial(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.Run(context.Background(), "echo "+strconv.Itoa(i))
			if err == nil && string(res.Stdout) != strconv.Itoa(i)+"\n" {
				err = errors.New("wrong output " + string(res.Stdout))
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// awaitGone polls until process pid no longer exists.
func awaitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("remote process %d still running", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readPID polls for the pid file a remote command writes.
func readPID(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && strings.HasSuffix(string(b), "\n") {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pid in %s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunCommandTimeoutKillsRemote(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.CommandTimeout = 2 * time.Second
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cmd := "echo $$ > pid; exec sleep 60"
	_, err = c.Run(context.Background(), cmd)
	var te *TimeoutError
	if !errors.As(err, &te) {
		t.Fatalf("want *TimeoutError, got %T %v", err, err)
	}
	if !strings.Contains(err.Error(), "command timed out after 2s: "+cmd) {
		t.Fatalf("message: %v", err)
	}
	awaitGone(t, readPID(t, filepath.Join(f.srv.Home, "pid")))
	// The connection is still usable afterwards.
	if res, err := c.Run(context.Background(), "true"); err != nil || res.ExitCode != 0 {
		t.Fatalf("after timeout: %+v %v", res, err)
	}
}

func TestRunContextCancelKillsRemote(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		readPID(t, filepath.Join(f.srv.Home, "pid2"))
		cancel()
	}()
	_, err := c.Run(ctx, "echo $$ > pid2; exec sleep 60")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	awaitGone(t, readPID(t, filepath.Join(f.srv.Home, "pid2")))
}

func TestRunSignalledCommand(t *testing.T) {
	c := newFixture(t).dial(t)
	res, err := c.Run(context.Background(), "kill -KILL $$")
	if err != nil || res.ExitCode != -1 || res.Signal != "KILL" {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestDialAuthFailure(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.Signer = sshtest.MustSigner(t) // not authorized
	_, err := Dial(context.Background(), cfg)
	var ae *AuthError
	if !errors.As(err, &ae) {
		t.Fatalf("want *AuthError, got %T %v", err, err)
	}
	want := "ssh rbee@127.0.0.1:" + strconv.Itoa(f.srv.Port) + ": authentication failed"
	if !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("message %q does not start with %q", err, want)
	}
}

func TestDialIdentityFile(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.Signer = nil
	cfg.IdentityFile = filepath.Join(t.TempDir(), "id")
	if _, err := Dial(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "identity file") {
		t.Fatalf("missing identity file: %v", err)
	}
	if err := os.WriteFile(cfg.IdentityFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Dial(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "parse identity file") {
		t.Fatalf("garbage identity file: %v", err)
	}
	// A real OpenSSH private key file works.
	pemKey, signer := opensshKey(t)
	srv := sshtest.New(t, signer.PublicKey())
	f2 := &fixture{srv: srv, key: signer, knownHosts: f.knownHosts}
	f2.writeKnownHosts(t, srv.KnownHostsLine("hive-1"))
	cfg = f2.config()
	cfg.Signer = nil
	cfg.IdentityFile = filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(cfg.IdentityFile, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// opensshKey returns a fresh ed25519 key in OpenSSH PEM form and its signer.
func opensshKey(t *testing.T) ([]byte, ssh.Signer) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "test")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(block), signer
}

func TestDialHostKeyChecks(t *testing.T) {
	f := newFixture(t)
	other := sshtest.MustSigner(t)
	otherLine := func(name string) string {
		s, err := sshtest.Start(sshtest.Options{HostKey: other, Home: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		return s.KnownHostsLine(name)
	}
	port := strconv.Itoa(f.srv.Port)
	cases := []struct {
		name    string
		lines   []string
		alias   string
		unknown bool // want *HostKeyError with Unknown
		ok      bool
	}{
		{"bare alias", []string{f.srv.KnownHostsLine("hive-1")}, "hive-1", false, true},
		{"bracketed alias with port", []string{f.srv.KnownHostsLine("[hive-1]:" + port)}, "hive-1", false, true},
		{"default alias is host", []string{f.srv.KnownHostsLine("127.0.0.1")}, "", false, true},
		{"mismatch", []string{otherLine("hive-1")}, "hive-1", false, false},
		{"unknown host", []string{f.srv.KnownHostsLine("hive-2")}, "hive-1", true, false},
		{"empty known_hosts", []string{""}, "hive-1", true, false},
		{"wrong port entry", []string{f.srv.KnownHostsLine("[hive-1]:2222")}, "hive-1", true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.writeKnownHosts(t, tc.lines...)
			cfg := f.config()
			cfg.HostKeyAlias = tc.alias
			c, err := Dial(context.Background(), cfg)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				return
			}
			var he *HostKeyError
			if !errors.As(err, &he) {
				t.Fatalf("want *HostKeyError, got %T %v", err, err)
			}
			if he.Unknown != tc.unknown {
				t.Errorf("Unknown = %v, want %v (%v)", he.Unknown, tc.unknown, err)
			}
			if !strings.Contains(err.Error(), "host key") || !strings.Contains(err.Error(), `"hive-1"`) {
				t.Errorf("message %q must name the host and say host key", err)
			}
		})
	}
}

func TestDialConfigErrors(t *testing.T) {
	f := newFixture(t)
	for name, mutate := range map[string]func(*Config){
		"no known_hosts":      func(c *Config) { c.KnownHostsFile = "" },
		"missing known_hosts": func(c *Config) { c.KnownHostsFile = "/nonexistent/known_hosts" },
		"no user":             func(c *Config) { c.User = "" },
		"no host":             func(c *Config) { c.Host = "" },
		"no key":              func(c *Config) { c.Signer = nil },
		"bad port":            func(c *Config) { c.Port = 70000 },
	} {
		cfg := f.config()
		mutate(&cfg)
		if c, err := Dial(context.Background(), cfg); err == nil {
			c.Close()
			t.Errorf("%s: Dial succeeded", name)
		}
	}
}

func TestDialConnectTimeout(t *testing.T) {
	// A listener that never accepts: the kernel completes the TCP handshake
	// but no SSH banner ever comes.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f := newFixture(t)
	cfg := f.config()
	cfg.Port = ln.Addr().(*net.TCPAddr).Port
	cfg.ConnectTimeout = 300 * time.Millisecond
	_, err = Dial(context.Background(), cfg)
	var te *TimeoutError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "timed out") || !strings.Contains(err.Error(), "300ms") {
		t.Fatalf("want connect timeout naming 300ms, got %T %v", err, err)
	}

	// ctx cancellation ends the handshake too, as a context error.
	cfg.ConnectTimeout = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = Dial(ctx, cfg)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want context deadline error, got %v", err)
	}
}

func TestUpload(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t)
	data := bytes.Repeat([]byte("rbee-hive binary\n"), 200000) // ~3.4 MB
	if err := c.Upload(context.Background(), bytes.NewReader(data), "~/.local/bin/rbee-hive", 0o755); err != nil {
		t.Fatal(err)
	}
	final := filepath.Join(f.srv.Home, ".local/bin/rbee-hive")
	got, err := os.ReadFile(final)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("content mismatch (%d bytes, %v)", len(got), err)
	}
	if st, _ := os.Stat(final); st.Mode().Perm() != 0o755 {
		t.Fatalf("mode %v", st.Mode())
	}
	// Overwrite replaces it; the remote can run it right after.
	if err := c.Upload(context.Background(), strings.NewReader("#!/bin/sh\necho v2\n"), "~/.local/bin/rbee-hive", 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := c.Run(context.Background(), ".local/bin/rbee-hive")
	if err != nil || string(res.Stdout) != "v2\n" {
		t.Fatalf("%+v %v", res, err)
	}
	// Absolute paths work too.
	abs := filepath.Join(f.srv.Home, "abs", "x")
	if err := c.Upload(context.Background(), strings.NewReader("x"), abs, 0o600); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(abs); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%v %v", st, err)
	}
	assertNoTemps(t, filepath.Join(f.srv.Home, ".local/bin"))
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

// cancellingReader yields n bytes, then cancels ctx and keeps yielding.
type cancellingReader struct {
	n      int
	cancel func()
}

func (r *cancellingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		r.cancel()
	}
	for i := range p {
		p[i] = 'z'
	}
	r.n -= len(p)
	return len(p), nil
}

// blockingReader yields n bytes, then blocks until unblock is closed.
type blockingReader struct {
	n       int
	unblock chan struct{}
}

func (r *blockingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		<-r.unblock
		return 0, io.EOF
	}
	k := min(len(p), r.n)
	for i := range p[:k] {
		p[i] = 'y'
	}
	r.n -= k
	return k, nil
}

func TestUploadInterruptedLeavesNothing(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t)
	dir := filepath.Join(f.srv.Home, ".local/bin")
	final := filepath.Join(dir, "rbee-hive")

	t.Run("cancel between reads", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		err := c.Upload(ctx, &cancellingReader{n: 1 << 20, cancel: cancel}, "~/.local/bin/rbee-hive", 0o755)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("want context.Canceled, got %v", err)
		}
		if _, err := os.Stat(final); !os.IsNotExist(err) {
			t.Fatalf("final path exists after interrupted upload: %v", err)
		}
		assertNoTemps(t, dir)
	})

	t.Run("cancel while source blocks, old file kept", func(t *testing.T) {
		if err := os.WriteFile(final, []byte("old"), 0o755); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		src := &blockingReader{n: 512 << 10, unblock: make(chan struct{})}
		defer close(src.unblock)
		go func() {
			// Cancel once the partial temp file is visible on the server.
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				entries, _ := os.ReadDir(dir)
				for _, e := range entries {
					if info, _ := e.Info(); strings.Contains(e.Name(), ".tmp-") && info != nil && info.Size() > 0 {
						cancel()
						return
					}
				}
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
		}()
		err := c.Upload(ctx, src, "~/.local/bin/rbee-hive", 0o755)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("want context.Canceled, got %v", err)
		}
		if got, _ := os.ReadFile(final); string(got) != "old" {
			t.Fatalf("final path changed: %q", got)
		}
		assertNoTemps(t, dir)
	})

	t.Run("command timeout bounds an upload", func(t *testing.T) {
		cfg := f.config()
		cfg.CommandTimeout = 300 * time.Millisecond
		c2, err := Dial(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		src := &blockingReader{n: 1 << 10, unblock: make(chan struct{})}
		defer close(src.unblock)
		err = c2.Upload(context.Background(), src, "~/.local/bin/other", 0o755)
		var te *TimeoutError
		if !errors.As(err, &te) || !strings.Contains(err.Error(), "timed out after 300ms") {
			t.Fatalf("want upload timeout, got %T %v", err, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "other")); !os.IsNotExist(err) {
			t.Fatalf("final path exists: %v", err)
		}
		assertNoTemps(t, dir)
	})
}

func TestLimiter(t *testing.T) {
	l := NewLimiter(2)
	ctx := context.Background()
	r1, err1 := l.Acquire(ctx, "hive-1")
	r2, err2 := l.Acquire(ctx, "hive-1")
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	// Other hosts are independent.
	r3, err := l.Acquire(ctx, "hive-2")
	if err != nil {
		t.Fatal(err)
	}
	r3()
	// A third holder for hive-1 waits; ctx ends the wait.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := l.Acquire(cctx, "hive-1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want deadline, got %v", err)
	}
	got := make(chan error, 1)
	go func() {
		r, err := l.Acquire(ctx, "hive-1")
		if err == nil {
			r()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("third Acquire did not wait (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	r1()
	r1() // a second release of the same slot does nothing
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if n := l.InUse("hive-1"); n != 1 {
		t.Fatalf("InUse = %d, want 1", n)
	}
	r2()
	if n := l.InUse("hive-1"); n != 0 {
		t.Fatalf("InUse = %d, want 0", n)
	}
	// Cancelled ctx fails immediately even with free slots.
	dead, cancel2 := context.WithCancel(ctx)
	cancel2()
	if _, err := l.Acquire(dead, "hive-3"); err == nil {
		t.Fatal("Acquire with cancelled ctx succeeded")
	}
}

func TestExpandHomePathAndQuote(t *testing.T) {
	for in, want := range map[string]string{
		"~/.local/bin/rbee-hive": ".local/bin/rbee-hive",
		"~":                      ".",
		"~/":                     ".",
		"/usr/bin/x":             "/usr/bin/x",
		"rel/x":                  "rel/x",
		"~other/x":               "~other/x",
	} {
		if got := ExpandHomePath(in); got != want {
			t.Errorf("ExpandHomePath(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"plain-1.0/x": "plain-1.0/x",
		"":            "''",
		"a b":         "'a b'",
		"it's":        `'it'\''s'`,
		"$(rm)":       "'$(rm)'",
	} {
		if got := ShellQuote(in); got != want {
			t.Errorf("ShellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}

// A TCP connect that hangs (the SYN is never answered) must end as a
// *TimeoutError every time. The dialer's deadline used to fire a moment
// before the context reported it, and then Dial returned a bare
// "dial tcp …: i/o timeout" instead (seen against a blackholed hive).
func TestDialConnectTimeoutWhileConnecting(t *testing.T) {
	// A listener with a backlog of 0 that never accepts: once its queue is
	// full, the kernel drops further SYNs and connect hangs.
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var fill []net.Conn
	defer func() {
		for _, c := range fill {
			c.Close()
		}
	}()
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			break // the queue is full
		}
		fill = append(fill, c)
	}
	f := newFixture(t)
	cfg := f.config()
	cfg.Port = port
	cfg.ConnectTimeout = 20 * time.Millisecond
	for i := range 50 {
		_, err := Dial(context.Background(), cfg)
		var te *TimeoutError
		if !errors.As(err, &te) || te.Op != "connect" {
			t.Fatalf("attempt %d: want a connect *TimeoutError, got %T %v", i, err, err)
		}
	}
}
