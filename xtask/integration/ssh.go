package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSH connects to svc's published port 22 as user rbee with keys/test_id_rsa,
// pinning the host key to keys/hosts/<svc>/ssh_host_ed25519_key.pub (host
// keys are never ignored). Close the client when done.
func (h *Harness) SSH(ctx context.Context, svc string) (*ssh.Client, error) {
	return h.SSHWithKey(ctx, svc, filepath.Join(h.cfg.keysDir, "test_id_rsa"), nil)
}

// SSHWithKey is SSH with another client key (keys/wrong_id_rsa for
// authentication-failure tests) and, when hostKey is non-nil, another host
// key check in place of the pin (a known_hosts file, another machine's
// key). Either way it offers only the pinned key's type, so a check that
// fails is a mismatch, not a different key of the server.
func (h *Harness) SSHWithKey(ctx context.Context, svc, keyFile string, hostKey ssh.HostKeyCallback) (*ssh.Client, error) {
	hp, err := h.HostPort(svc, 22)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", svc, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: client key: %w (run `go run mage.go keys`)", svc, err)
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: client key %s: %w", svc, keyFile, err)
	}
	hostKeyFile := filepath.Join(h.cfg.keysDir, "hosts", svc, "ssh_host_ed25519_key.pub")
	hostKeyLine, err := os.ReadFile(hostKeyFile)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: host key: %w", svc, err)
	}
	pinned, _, _, _, err := ssh.ParseAuthorizedKey(hostKeyLine)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: host key %s: %w", svc, hostKeyFile, err)
	}
	if hostKey == nil {
		hostKey = ssh.FixedHostKey(pinned)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(hp))
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ssh %s (%s): %w", svc, addr, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	cc, chans, reqs, err := ssh.NewClientConn(conn, addr, &ssh.ClientConfig{
		User:            "rbee",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: hostKey,
		// Offer only the pinned key's type, so a server with several host
		// keys shows the pinned one instead of failing as a mismatch.
		HostKeyAlgorithms: hostKeyAlgorithms(pinned),
		Timeout:           15 * time.Second,
	})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ssh %s (%s): %w", svc, addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(cc, chans, reqs), nil
}

// hostKeyAlgorithms lists the signature algorithms a host key of this type
// can use (an RSA key signs with SHA-2 variants, not its "ssh-rsa" type).
func hostKeyAlgorithms(k ssh.PublicKey) []string {
	if k.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{k.Type()}
}
