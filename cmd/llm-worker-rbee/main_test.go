package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/model"
)

// TestMain lets the test binary act as llm-worker-rbee, so process-level
// tests need no separate build.
func TestMain(m *testing.M) {
	if os.Getenv("RBEE_WORKER_AS_MAIN") == "1" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func workerCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "RBEE_WORKER_AS_MAIN=1")
	return cmd
}

func TestExitCodes(t *testing.T) {
	cases := []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"version", []string{"--version"}, 0, "llm-worker-rbee "},
		{"unknown flag", []string{"--bogus"}, 2, "flag provided but not defined"},
		{"missing worker id", []string{"--model", "x"}, 2, "--worker-id is required"},
		{"bad duration", []string{"--heartbeat-interval", "soon"}, 2, "invalid value"},
		{"extra argument", []string{"--worker-id", "w", "--model", "m", "extra"}, 2, "unexpected argument"},
		{"missing model file", []string{"--worker-id", "w", "--model", "/nonexistent/model.bin", "--listen-host", "127.0.0.1"}, 1, "/nonexistent/model.bin"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := workerCmd(tc.args...).CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(string(out), tc.out) {
				t.Fatalf("exit %d, output %q; want %d containing %q", code, out, tc.code, tc.out)
			}
		})
	}
}

// A real worker process serves, and on SIGTERM exits 0 within 10 s.
func TestProcessSIGTERM(t *testing.T) {
	path := filepath.Join(t.TempDir(), "model.bin")
	if err := model.Train(model.Corpus, 3).Save(path); err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := workerCmd("--worker-id", "w-p", "--model", path, "--listen-host", "127.0.0.1", "--port", strconv.Itoa(port),
		"--advertise-url", "http://worker-p:"+strconv.Itoa(port))
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	c := client.New("http://127.0.0.1:" + strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		h, err := c.Health(ctx)
		cancel()
		if err == nil && strings.Contains(h, `"ready"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker not healthy within 10s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() {
		for l := range lines {
			t.Log(l)
		}
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
		t.Logf("exited 0 after %s", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("worker still running 10s after SIGTERM")
	}
}
