//go:build docker

package sshcomm

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
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
	k, _, _, _, err := ssh.ParseAuthorizedKey(suite.RepoFile(t, rel))
	if err != nil {
		t.Fatalf("parse %s: %v", rel, err)
	}
	return k
}

// signer parses a private key file of the repository.
func signer(t testing.TB, rel string) ssh.Signer {
	t.Helper()
	s, err := ssh.ParsePrivateKey(suite.RepoFile(t, rel))
	if err != nil {
		t.Fatalf("parse %s: %v", rel, err)
	}
	return s
}
