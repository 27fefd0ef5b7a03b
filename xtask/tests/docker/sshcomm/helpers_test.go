//go:build docker

package sshcomm

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

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

// publicKey parses an authorized_keys-format public key file of the repository.
func publicKey(t testing.TB, rel string) ssh.PublicKey {
	t.Helper()
	k, _, _, _, err := ssh.ParseAuthorizedKey(suite.RepoFile(t, rel))
	if err != nil {
		t.Fatalf("parse %s: %v", rel, err)
	}
	return k
}
