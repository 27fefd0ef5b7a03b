package hive

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startHiveProcess runs the real rbee-hive binary on a free port with a
// model in its catalog and one worker spawned; it returns the command, its
// base URL, the worker and its stderr.
type hiveProc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed after cmd.Wait returned
	code   int
	base   string
	worker api.WorkerProcess
	stderr *lockedBuffer
}

func startHiveProcess(t *testing.T) *hiveProc {
	t.Helper()
	needWorker(t)
	home := isolate(t)
	_, hub := newTestHub(t, map[string][]byte{"/rbee/tiny/resolve/main/model.bin": ngramModel(t)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	wp := freePortBase(t)
	// Machine-local settings come from hive.toml, the rest from flags.
	writeHiveTOML(t, home, fmt.Sprintf("gpus = 1\nhf_endpoint = %q\nworker_ports = \"%d-%d\"\n", hub.URL, wp, wp+9))
	stderr := &lockedBuffer{}
	cmd := exec.Command(hiveBin, "--port", strconv.Itoa(port), "--hive-id", "hive-1", "--data-dir", t.TempDir(),
		"--advertise-url", "http://hive-1.test:"+strconv.Itoa(port), "--heartbeat-interval", "200ms")
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	hp := &hiveProc{cmd: cmd, exited: make(chan struct{}), stderr: stderr}
	exited := hp.exited
	go func() { _ = cmd.Wait(); hp.code = cmd.ProcessState.ExitCode(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("rbee-hive stderr:\n%s", stderr)
		}
	})
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	waitFor(t, "rbee-hive /health", 15*time.Second, func() bool {
		resp, err := http.Get(base + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if evs := run(t, base, map[string]any{"operation": "model_download", "model": testModel}); term(evs) != api.TermDone {
		t.Fatalf("download: %v", evs)
	}
	evs := run(t, base, map[string]any{"operation": "worker_spawn", "model": testModel, "device": "gpu:0"})
	if term(evs) != api.TermDone {
		t.Fatalf("spawn: %v", evs)
	}
	w := result[api.WorkerProcess](t, evs)
	if w.Port < wp || w.Port > wp+9 {
		t.Fatalf("worker port %d outside hive.toml range %d-%d", w.Port, wp, wp+9)
	}
	hp.base, hp.worker = base, w
	return hp
}

func (hp *hiveProc) waitExit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-hp.exited:
		return hp.code
	case <-time.After(within):
		t.Fatalf("rbee-hive did not exit within %s", within)
		return -1
	}
}

func TestProcessSIGTERM(t *testing.T) {
	hp := startHiveProcess(t)
	start := time.Now()
	if err := hp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := hp.waitExit(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	t.Logf("SIGTERM to exit: %s", time.Since(start))
	if !processGone(hp.worker.PID) {
		t.Fatalf("worker %d survived the hive's SIGTERM", hp.worker.PID)
	}
	if !strings.Contains(hp.stderr.String(), "shutting down (signal)") {
		t.Fatalf("log: %s", hp.stderr)
	}
}

func TestProcessShutdownEndpoint(t *testing.T) {
	hp := startHiveProcess(t)
	code, body := post(t, hp.base+"/v1/shutdown", "", "")
	if code != 200 {
		t.Fatalf("shutdown = %d %s", code, body)
	}
	if code := hp.waitExit(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if !processGone(hp.worker.PID) {
		t.Fatalf("worker %d survived /v1/shutdown", hp.worker.PID)
	}
}
