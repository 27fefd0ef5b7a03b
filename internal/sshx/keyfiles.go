package sshx

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// CheckKeyFiles checks, before any connection is made, what Dial will
// read: the identity file must be a regular file readable by its owner
// only (OpenSSH refuses a private key that group or others can read or
// write) and parse as an unencrypted private key; known_hosts must be a
// regular file that group and others cannot write (anyone who can add a
// line to it can impersonate every hive) and parse. An empty path is not
// checked (Dial then refuses with its own error).
func CheckKeyFiles(identityFile, knownHostsFile string) error {
	if identityFile != "" {
		if err := checkMode(identityFile, "identity_file", 0o077, "group or others can read or write it; chmod 600 it, as OpenSSH requires"); err != nil {
			return err
		}
		pem, err := os.ReadFile(identityFile)
		if err != nil {
			return fmt.Errorf("identity_file: %w", err)
		}
		if _, err := ssh.ParsePrivateKey(pem); err != nil {
			return fmt.Errorf("identity_file %s: not a usable private key: %w", identityFile, err)
		}
	}
	if knownHostsFile != "" {
		if err := checkMode(knownHostsFile, "known_hosts", 0o022, "group or others can write it; chmod 644 or 600 it"); err != nil {
			return err
		}
		if _, err := knownhosts.New(knownHostsFile); err != nil {
			return fmt.Errorf("known_hosts %s: %w", knownHostsFile, err)
		}
	}
	return nil
}

func checkMode(path, key string, forbidden os.FileMode, why string) error {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s %s does not exist", key, path)
		}
		return fmt.Errorf("%s: %w", key, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s %s is not a regular file", key, path)
	}
	if perm := st.Mode().Perm(); perm&forbidden != 0 {
		return fmt.Errorf("%s %s has mode %04o: %s", key, path, perm, why)
	}
	return nil
}
