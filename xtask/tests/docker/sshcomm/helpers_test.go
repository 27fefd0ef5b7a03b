//go:build docker

package sshcomm

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/integration"
)

const (
	hive = "hive-localhost" // the localhost topology's only hive (service and alias)

	binaryPath = "/home/rbee/.local/bin/rbee-hive" // hives.conf binary_path, expanded
	queenHive  = "/usr/local/share/rbee/rbee-hive" // what the queen's hive_install uploads
	queenToml  = "/etc/rbee/queen.toml"            // where the queen reads its config
	queenKey   = "/etc/rbee/keys/test_id_rsa"      // the queen's SSH identity
	probePath  = "/etc/rbee/rbee-hive-standin"     // a stand-in hive binary mounted into the queen
	opTimeout  = 90 * time.Second                  // bound for any single queen operation
)

// bareHive is a hive machine with sshd only: no binary, no daemon.
var bareHive = integration.WithEnv(map[string]string{"RBEE_HIVE_PREINSTALLED": "0", "RBEE_HIVE_AUTOSTART": "0"})

// repoRoot is the repository root (where go.mod, configs/ and keys/ are),
// found by walking up from the package directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// repoFile reads a file of the repository.
func repoFile(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatalf("read %s: %v (keys come from `go run mage.go keys`)", rel, err)
	}
	return b
}

// queenConfig is configs/localhost/queen.toml with the given keys (as
// "section.key" or a top-level "key") set to raw TOML values. Every key
// must already be in the file, so a typo fails here, not in the queen.
func queenConfig(t testing.TB, set map[string]string) []byte {
	t.Helper()
	b := repoFile(t, "configs/localhost/queen.toml")
	for k, v := range set {
		key := k[strings.LastIndex(k, ".")+1:]
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `\s*=.*$`)
		if len(re.FindAll(b, -1)) != 1 {
			t.Fatalf("queen.toml variant: key %q is not in configs/localhost/queen.toml exactly once", k)
		}
		b = re.ReplaceAll(b, []byte(key+" = "+v))
	}
	return b
}

// runOp runs one queen operation to its terminator and says how long it took.
func runOp(t testing.TB, q *client.Client, req api.JobRequest) (client.Outcome, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	t0 := time.Now()
	o, err := q.Run(ctx, req, nil)
	d := time.Since(t0)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Operation, req.Alias, err)
	}
	t.Logf("%s %s (force=%v): %s in %v", req.Operation, req.Alias, req.Force, o.Terminator(), d.Round(time.Millisecond))
	return o, d
}

// mustDone fails the test unless o ended [DONE].
func mustDone(t testing.TB, o client.Outcome) {
	t.Helper()
	if o.Kind.String() != api.TermDone {
		t.Fatalf("job %s ended %s; want %s", o.JobID, o.Terminator(), api.TermDone)
	}
}

// mustError fails the test unless o ended [ERROR] with every one of parts.
func mustError(t testing.TB, o client.Outcome, parts ...string) {
	t.Helper()
	if o.Kind.String() != api.TermError {
		t.Fatalf("job %s ended %s; want %s", o.JobID, o.Terminator(), api.TermError)
	}
	for _, p := range parts {
		if !strings.Contains(o.Error, p) {
			t.Errorf("job %s: error %q does not name %q", o.JobID, o.Error, p)
		}
	}
}

// sh runs a shell script in svc's container (as root unless opts say
// otherwise) and returns its stdout; a non-zero exit fails the test.
func sh(t testing.TB, h *integration.Harness, svc, script string, opts ...integration.ExecOption) string {
	t.Helper()
	r := h.MustExec(t, svc, []string{"sh", "-c", script}, opts...)
	if r.ExitCode != 0 {
		t.Fatalf("%s: `%s` exited %d: %s%s", svc, script, r.ExitCode, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// sshRun runs cmd over one session of c and returns exit code, stdout and
// stderr, each kept apart.
func sshRun(c *ssh.Client, cmd string) (code int, stdout, stderr []byte, err error) {
	s, err := c.NewSession()
	if err != nil {
		return 0, nil, nil, fmt.Errorf("new session: %w", err)
	}
	defer s.Close()
	var o, e bytes.Buffer
	s.Stdout, s.Stderr = &o, &e
	err = s.Run(cmd)
	if ee, ok := err.(*ssh.ExitError); ok {
		return ee.ExitStatus(), o.Bytes(), e.Bytes(), nil
	}
	return 0, o.Bytes(), e.Bytes(), err
}

// dialSSH connects to addr as user rbee with signer, checking the server's
// host key with hostKey; it is the harness's client with the host key check
// left to the test.
func dialSSH(ctx context.Context, addr string, signer ssh.Signer, hostKey ssh.HostKeyCallback) (*ssh.Client, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	cc, chans, reqs, err := ssh.NewClientConn(conn, addr, &ssh.ClientConfig{
		User:              "rbee",
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   hostKey,
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		Timeout:           15 * time.Second,
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(cc, chans, reqs), nil
}

// publicKey parses an authorized_keys-format public key file of the repository.
func publicKey(t testing.TB, rel string) ssh.PublicKey {
	t.Helper()
	k, _, _, _, err := ssh.ParseAuthorizedKey(repoFile(t, rel))
	if err != nil {
		t.Fatalf("parse %s: %v", rel, err)
	}
	return k
}

// signer parses a private key file of the repository.
func signer(t testing.TB, rel string) ssh.Signer {
	t.Helper()
	s, err := ssh.ParsePrivateKey(repoFile(t, rel))
	if err != nil {
		t.Fatalf("parse %s: %v", rel, err)
	}
	return s
}
