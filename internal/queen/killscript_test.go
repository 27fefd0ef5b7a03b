package queen

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The grace between TERM and KILL is wall-clock time on the hive, however
// slowly the host runs the script's polls: here every `sleep 0.1` of the
// loop takes a whole second, as on a badly loaded machine, and a hive that
// ignores TERM is still killed about grace seconds after TERM.
func TestKillScriptGraceIsWallClock(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc")
	}
	dir := t.TempDir()
	// A stand-in hive that ignores TERM; "rbee-hive" is in its command line.
	hive := exec.Command("bash", "-c", `exec -a rbee-hive-standin sh -c 'trap "" TERM; while :; do sleep 1; done'`)
	if err := hive.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- hive.Wait() }()
	t.Cleanup(func() { _ = syscall.Kill(hive.Process.Pid, syscall.SIGKILL) })
	pidFile := filepath.Join(dir, "rbee-hive.pid")
	// recorded_hive accepts a process only if it started before the pid
	// file was written (to the second).
	time.Sleep(1100 * time.Millisecond)
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(hive.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	slow := filepath.Join(dir, "bin")
	if err := os.Mkdir(slow, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(slow, "sleep"), []byte("#!/bin/sh\nexec /bin/sleep 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	const grace = 2
	script := recordedHiveFn + "\n" + fmt.Sprintf(killScript, shellQuote(pidFile), grace)
	cmd := exec.Command("sh", "-c", script)
	cmd.Env = append(os.Environ(), "PATH="+slow+":"+os.Getenv("PATH"))
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(t0)
	if err != nil {
		t.Fatalf("kill script: %v: %s", err, out)
	}
	if want := fmt.Sprintf("%d KILL", hive.Process.Pid); strings.TrimSpace(string(out)) != want {
		t.Fatalf("kill script printed %q; want %q", out, want)
	}
	// A count of 20 polls of "0.1 s" would take at least 20 s here; the
	// margin covers whole seconds, the last slow poll and a loaded machine.
	if took < grace*time.Second || took > (grace+8)*time.Second {
		t.Errorf("TERM to KILL took %v; want the %ds grace (+8s margin; a count of polls would take 20s)", took, grace)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the stand-in hive still runs after the kill script")
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file after the kill script: %v; want removed", err)
	}
}

func TestKillGrace(t *testing.T) {
	for _, c := range []struct {
		in   time.Duration
		want int
	}{{0, 1}, {500 * time.Millisecond, 1}, {time.Second, 1}, {1500 * time.Millisecond, 2}, {5 * time.Second, 5}, {time.Hour, 30}} {
		if got := killGrace(c.in); got != c.want {
			t.Errorf("killGrace(%v) = %d; want %d", c.in, got, c.want)
		}
	}
}

// awaitStopped waits until every thread of pid is stopped: kill(SIGSTOP)
// returns before the threads have stopped, and one still running can
// answer a request in the meantime.
func awaitStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		stopped := len(tasks) > 0
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			i := strings.LastIndexByte(string(b), ')')
			if err != nil || i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
				stopped = false
			}
		}
		if stopped {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d not stopped within 10s after SIGSTOP", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
