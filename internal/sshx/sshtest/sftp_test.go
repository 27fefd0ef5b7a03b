package sshtest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

func dial(t *testing.T, s *Server, key ssh.Signer) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", s.Addr, &ssh.ClientConfig{User: "rbee", Auth: []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey.PublicKey())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// holders lists the processes among pids that have path open.
func holders(t *testing.T, path string, pids ...int) []int {
	t.Helper()
	var out []int
	for _, pid := range pids {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue // gone, or not ours to read
		}
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && l == path {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// children lists the pids of this process's direct children.
func children(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces, so cut at the last ')'.
		rest := string(stat[bytes.LastIndexByte(stat, ')')+1:])
		if f := strings.Fields(rest); len(f) > 1 && f[1] == strconv.Itoa(os.Getpid()) {
			out = append(out, pid)
		}
	}
	return out
}

// A file being written over SFTP is open in a child process (the helper),
// never in the test process: a fork of the test process (every exec
// session) cannot inherit a write descriptor to it, so executing a file
// right after its upload cannot meet ETXTBSY.
func TestSFTPWritesAreNotOpenInTheServerProcess(t *testing.T) {
	key := MustSigner(t)
	s := New(t, key.PublicKey())
	sc, err := sftp.NewClient(dial(t, s, key))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	f, err := sc.Create("upload")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("#!/bin/sh\necho uploaded\n")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.Home, "upload")
	if got := holders(t, path, os.Getpid()); len(got) != 0 {
		t.Fatalf("the server's own process holds %s open while it is uploaded", path)
	}
	// Negative control: the descriptor exists, in a child (the helper).
	if got := holders(t, path, children(t)...); len(got) != 1 {
		t.Fatalf("%d children hold %s open during the upload, want 1 (the SFTP helper)", len(got), path)
	}
	if err := f.Chmod(0o755); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	sess, err := dial(t, s, key).NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.Output("./upload")
	if err != nil || string(out) != "uploaded\n" {
		t.Fatalf("running the upload: %q %v", out, err)
	}
}

// Uploads and executions of the uploaded files, concurrently, while other
// sessions fork: each executes its own file right after closing it.
func TestConcurrentUploadThenExec(t *testing.T) {
	key := MustSigner(t)
	s := New(t, key.PublicKey())
	c := dial(t, s, key)
	const workers, rounds = 4, 4
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				name := fmt.Sprintf("bin-%d-%d", w, r)
				sc, err := sftp.NewClient(c)
				if err != nil {
					errs <- err
					return
				}
				f, err := sc.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
				if err == nil {
					_, err = f.Write([]byte("#!/bin/sh\necho " + name + "\n#" + strings.Repeat("x", 64<<10) + "\n"))
				}
				if err == nil {
					err = f.Chmod(0o755)
				}
				if err == nil {
					err = f.Close()
				}
				sc.Close()
				if err != nil {
					errs <- fmt.Errorf("upload %s: %w", name, err)
					return
				}
				sess, err := c.NewSession()
				if err != nil {
					errs <- err
					return
				}
				out, err := sess.CombinedOutput("./" + name)
				sess.Close()
				if err != nil || string(out) != name+"\n" {
					errs <- fmt.Errorf("run %s: %q %v", name, out, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
