package sshx

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A host key marked @revoked in known_hosts is reported as revoked, not as
// a key that "differs".
func TestDialRevokedHostKey(t *testing.T) {
	f := newFixture(t)
	f.writeKnownHosts(t, "@revoked "+f.srv.KnownHostsLine("hive-1"), f.srv.KnownHostsLine("hive-1"))
	cfg := f.config()
	cfg.HostKeyAlias = "hive-1"
	_, err := Dial(context.Background(), cfg)
	var he *HostKeyError
	if !errors.As(err, &he) || !he.Revoked || he.Unknown {
		t.Fatalf("err = %v; want a HostKeyError with Revoked", err)
	}
	if !strings.Contains(err.Error(), "revoked") || strings.Contains(err.Error(), "differs") {
		t.Fatalf("message %q: want it to say revoked, not differs", err)
	}
}

// CheckKeyFiles refuses what OpenSSH refuses, and what Dial could not use.
func TestCheckKeyFiles(t *testing.T) {
	f := newFixture(t)
	f.writeKnownHosts(t, f.srv.KnownHostsLine("hive-1"))
	cfg := f.config()
	dir := t.TempDir()
	identity := filepath.Join(dir, "id")
	pem, _ := opensshKey(t)
	if err := os.WriteFile(identity, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckKeyFiles(identity, cfg.KnownHostsFile); err != nil {
		t.Fatalf("good files: %v", err)
	}
	if err := CheckKeyFiles("", ""); err != nil {
		t.Fatalf("nothing configured: %v", err)
	}
	garbage := filepath.Join(dir, "garbage")
	_ = os.WriteFile(garbage, []byte("not a key"), 0o600)
	badKnown := filepath.Join(dir, "bad_known")
	_ = os.WriteFile(badKnown, []byte("@cert-authority\n"), 0o644)
	for _, tc := range []struct {
		name            string
		identity, known string
		chmodFile       string
		mode            os.FileMode
		want            string
	}{
		{"identity group-readable", identity, "", identity, 0o640, "has mode 0640: group or others can read or write it"},
		{"identity world-readable", identity, "", identity, 0o644, "has mode 0644"},
		{"known_hosts group-writable", "", cfg.KnownHostsFile, cfg.KnownHostsFile, 0o664, "known_hosts " + cfg.KnownHostsFile + " has mode 0664"},
		{"identity missing", filepath.Join(dir, "nope"), "", "", 0, "identity_file " + filepath.Join(dir, "nope") + " does not exist"},
		{"known_hosts missing", "", filepath.Join(dir, "nope"), "", 0, "known_hosts " + filepath.Join(dir, "nope") + " does not exist"},
		{"identity a directory", dir, "", "", 0, "is not a regular file"},
		{"identity not a key", garbage, "", "", 0, "not a usable private key"},
		{"known_hosts unparsable", "", badKnown, "", 0, "known_hosts " + badKnown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.chmodFile != "" {
				old, _ := os.Stat(tc.chmodFile)
				if err := os.Chmod(tc.chmodFile, tc.mode); err != nil {
					t.Fatal(err)
				}
				defer os.Chmod(tc.chmodFile, old.Mode().Perm())
			}
			if err := CheckKeyFiles(tc.identity, tc.known); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want %q", err, tc.want)
			}
		})
	}
}
