package sshtest

import (
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// sftpHelperEnv, set to a directory in a process's environment, makes that
// process an SFTP server on its stdin and stdout, working in the directory.
const sftpHelperEnv = "RBEE_SSHTEST_SFTP_HELPER"

// The SFTP helper: when this binary (a test binary importing sshtest) is
// started by serveSFTP, it serves the session on stdin/stdout and exits
// before any test runs.
func init() {
	dir := os.Getenv(sftpHelperEnv)
	if dir == "" {
		return
	}
	os.Exit(sftpHelperMain(dir, os.Stdin, os.Stdout))
}

func sftpHelperMain(dir string, in io.Reader, out io.WriteCloser) int {
	srv, err := sftp.NewServer(struct {
		io.Reader
		io.WriteCloser
	}{in, out}, sftp.WithServerWorkingDirectory(dir))
	if err != nil {
		fmt.Fprintf(os.Stderr, "sshtest sftp helper: %v\n", err)
		return 1
	}
	if err := srv.Serve(); err != nil && err != io.EOF {
		fmt.Fprintf(os.Stderr, "sshtest sftp helper: %v\n", err)
		srv.Close()
		return 1
	}
	srv.Close()
	return 0
}

// serveSFTP serves the "sftp" subsystem on ch in a child process (this
// binary, re-executed as the helper) and returns when that process ends.
//
// Out of process because a file being uploaded must not be open in a
// process that forks: every exec session forks this process, and a child
// inherits each open descriptor until its own execve closes it (O_CLOEXEC
// takes effect only at exec). A concurrent session that executes a file just
// uploaded and closed would then fail with ETXTBSY ("text file busy") while
// some other child still holds a write descriptor to it (golang/go#22315).
// The helper holds the only write descriptors and never forks; the test
// process holds none.
func (s *Server) serveSFTP(ch ssh.Channel) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe)
	cmd.Dir = s.Home
	cmd.Env = append(os.Environ(), sftpHelperEnv+"="+s.Home)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() {
		// Client → helper: the client's EOF, or the channel closing when
		// this session ends, ends the helper's input and so the helper.
		_, _ = io.Copy(stdin, ch)
		stdin.Close()
	}()
	// Helper → client, until the helper exits.
	_, _ = io.Copy(ch, stdout)
	return cmd.Wait()
}
