package setup

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// HiveNames are the hive host names that get an SSH host key: every hive
// service in the compose files, plus spares for suites that add hives.
var HiveNames = []string{
	"hive-localhost",
	"hive-1", "hive-2", "hive-3", "hive-4", "hive-5", "hive-6", "hive-7", "hive-8",
}

// Key file names under keys/.
const (
	ClientKeyFile  = "test_id_rsa"  // authorized on every hive
	WrongKeyFile   = "wrong_id_rsa" // never authorized; for auth-failure tests
	KnownHostsFile = "known_hosts"  // one line per hive name
	HostKeyFile    = "ssh_host_ed25519_key"
	// ClusterKeyFile is the test cluster's shared secret (64 hex digits,
	// mode 0600; see internal/auth): queen, hives, workers and the suites
	// sign with it. WrongClusterKeyFile is another one, for wrong-key tests.
	ClusterKeyFile      = "cluster.key"
	WrongClusterKeyFile = "wrong_cluster.key"
	clientKeyBits       = 3072
)

// Keys generates the test SSH material under <root>/keys. Keys that already
// exist are kept (so running containers and known_hosts stay valid);
// known_hosts is rewritten from the host public keys every time.
func Keys(ctx context.Context, cfg Config) error {
	dir := filepath.Join(cfg.Root, "keys")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	made := 0
	for _, name := range []string{ClientKeyFile, WrongKeyFile} {
		if err := ctx.Err(); err != nil {
			return err
		}
		created, err := ensureKey(filepath.Join(dir, name), "rbee-test "+name, newRSAKey)
		if err != nil {
			return fmt.Errorf("keys: %w", err)
		}
		if created {
			made++
		}
	}
	for _, name := range []string{ClusterKeyFile, WrongClusterKeyFile} {
		created, err := ensureSecret(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("keys: %w", err)
		}
		if created {
			made++
		}
	}
	var known strings.Builder
	for _, host := range HiveNames {
		if err := ctx.Err(); err != nil {
			return err
		}
		hostDir := filepath.Join(dir, "hosts", host)
		if err := os.MkdirAll(hostDir, 0o755); err != nil {
			return fmt.Errorf("keys: %w", err)
		}
		path := filepath.Join(hostDir, HostKeyFile)
		created, err := ensureKey(path, "root@"+host, newEd25519Key)
		if err != nil {
			return fmt.Errorf("keys: %w", err)
		}
		if created {
			made++
		}
		pub, err := os.ReadFile(path + ".pub")
		if err != nil {
			return fmt.Errorf("keys: %w", err)
		}
		pk, _, _, _, err := ssh.ParseAuthorizedKey(pub)
		if err != nil {
			return fmt.Errorf("keys: %s.pub: %w", path, err)
		}
		fmt.Fprintf(&known, "%s %s", host, ssh.MarshalAuthorizedKey(pk))
	}
	if err := writeFileAtomic(filepath.Join(dir, KnownHostsFile), []byte(known.String()), 0o644); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	cfg.vlogf("keys: %d new, %d kept in %s", made, 4+len(HiveNames)-made, dir)
	return nil
}

// ensureSecret keeps a valid cluster secret at path (fixing its mode to
// 0600, which every rbee program insists on) or writes a new random one.
func ensureSecret(path string) (bool, error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		b, derr := hex.DecodeString(strings.TrimSpace(string(data)))
		if derr != nil || len(b) != 32 {
			return false, fmt.Errorf("%s exists but is not 64 hex digits; delete it to regenerate", path)
		}
		return false, os.Chmod(path, 0o600)
	case !errors.Is(err, fs.ErrNotExist):
		return false, err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return false, err
	}
	return true, writeFileAtomic(path, []byte(hex.EncodeToString(b)+"\n"), 0o600)
}

func newRSAKey() (any, error) { return rsa.GenerateKey(rand.Reader, clientKeyBits) }

func newEd25519Key() (any, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	return priv, err
}

// ensureKey keeps a valid existing private key (re-deriving a missing .pub)
// or writes a new pair. It reports whether it generated one.
func ensureKey(path, comment string, gen func() (any, error)) (bool, error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		signer, perr := ssh.ParsePrivateKey(data)
		if perr != nil {
			return false, fmt.Errorf("%s exists but is not a usable private key (%v); delete it to regenerate", path, perr)
		}
		// Bind mounts and ssh clients insist on 0600.
		if err := os.Chmod(path, 0o600); err != nil {
			return false, err
		}
		if _, err := os.Stat(path + ".pub"); errors.Is(err, fs.ErrNotExist) {
			return false, writeFileAtomic(path+".pub", authorizedLine(signer.PublicKey(), comment), 0o644)
		}
		return false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return false, err
	}
	key, err := gen()
	if err != nil {
		return false, fmt.Errorf("generate %s: %w", path, err)
	}
	block, err := ssh.MarshalPrivateKey(key, comment)
	if err != nil {
		return false, fmt.Errorf("encode %s: %w", path, err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		return false, fmt.Errorf("encode %s: %w", path, err)
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return false, err
	}
	if err := writeFileAtomic(path+".pub", authorizedLine(signer.PublicKey(), comment), 0o644); err != nil {
		return false, err
	}
	return true, nil
}

func authorizedLine(pk ssh.PublicKey, comment string) []byte {
	line := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(pk)), "\n")
	return []byte(line + " " + comment + "\n")
}

// writeFileAtomic writes via a temporary file and rename, so an interrupted
// run never leaves half a key behind.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
