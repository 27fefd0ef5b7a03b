package queen

import (
	"os/exec"
	"sync"
	"syscall"

	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"github.com/rbee-dev/rbee/internal/sse"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/internal/sshx/sshtest"
)

// sshHive is a hive host reached over a real in-process SSH server (sshx's
// sshtest), with the queen's identity file and known_hosts on disk.
type sshHive struct {
	srv      *sshtest.Server
	hive     config.Hive
	identity string
	known    string
}

func writeIdentity(t *testing.T, dir string) (string, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return path, sp
}

func newSSHHive(t *testing.T, alias string, authorize bool) *sshHive {
	t.Helper()
	dir := t.TempDir()
	identity, pub := writeIdentity(t, dir)
	var keys []ssh.PublicKey
	if authorize {
		keys = append(keys, pub)
	}
	srv := sshtest.New(t, keys...)
	known := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(known, []byte(srv.KnownHostsLine(srv.Addr)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &sshHive{srv: srv, identity: identity, known: known, hive: config.Hive{
		Alias: alias, Hostname: "127.0.0.1", SSHPort: srv.Port, SSHUser: "rbee",
		HivePort: closedPort(t), BinaryPath: "~/.local/bin/rbee-hive",
	}}
}

func (h *sshHive) queen(t *testing.T, mutate func(*config.Queen)) *testQueen {
	return newTestQueen(t, []config.Hive{h.hive}, func(c *config.Queen, o *Options) {
		c.SSH.IdentityFile = h.identity
		c.SSH.KnownHosts = h.known
		c.SSH.ConnectTimeout = config.Duration(5 * time.Second)
		c.SSH.CommandTimeout = config.Duration(20 * time.Second)
		if mutate != nil {
			mutate(c)
		}
	})
}

func (h *sshHive) path(rel string) string { return filepath.Join(h.srv.Home, rel) }

// installFakeHive puts a wrapper at ~/.local/bin/rbee-hive that runs this
// test binary as a fake hive (see fakeHiveMain); "rbee-hive" stays in its
// command line, as the stop-by-pid safety check expects.
func (h *sshHive) installFakeHive(t *testing.T, extraEnv string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("#!/bin/sh\nRBEE_QUEEN_TEST_FAKE_HIVE=1 %s exec %q -rbee-hive \"$@\"\n", extraEnv, exe)
	if err := os.MkdirAll(h.path(".local/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.path(".local/bin/rbee-hive"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestHiveInstallUploadsAtomicallyAndRefusesOverwrite(t *testing.T) {
	h := newSSHHive(t, "hive-1", true)
	bin := filepath.Join(t.TempDir(), "rbee-hive")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho 'rbee-hive 9.9.9 (test)'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	q := h.queen(t, func(c *config.Queen) { c.HiveBinary = bin })
	out := q.run(t, api.JobRequest{Operation: api.OpHiveInstall, Alias: "hive-1"})
	wantDone(t, out)
	res, _ := client.Results[map[string]any](out)
	if len(res) != 1 || res[0]["version"] != "rbee-hive 9.9.9 (test)" {
		t.Fatalf("install result = %+v", res)
	}
	st, err := os.Stat(h.path(".local/bin/rbee-hive"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("installed binary: %v %v", st, err)
	}
	if entries, _ := os.ReadDir(h.path(".local/bin")); len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
	out = q.run(t, api.JobRequest{Operation: api.OpHiveInstall, Alias: "hive-1"})
	wantError(t, out, "hive-1: rbee-hive is already installed at ~/.local/bin/rbee-hive", "use force")
	// A temporary an interrupted install left behind is removed by the
	// next install; other files in the directory are not touched.
	stale := h.path(".local/bin/.rbee-hive.tmp-0123456789abcdef")
	other := h.path(".local/bin/keep-me")
	for _, f := range []string{stale, other} {
		if err := os.WriteFile(f, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out = q.run(t, api.JobRequest{Operation: api.OpHiveInstall, Alias: "hive-1", Force: true})
	wantDone(t, out)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale temporary still there after install: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("install removed an unrelated file: %v", err)
	}

	out = q.run(t, api.JobRequest{Operation: api.OpHiveUninstall, Alias: "hive-1"})
	wantDone(t, out)
	if _, err := os.Stat(h.path(".local/bin/rbee-hive")); !os.IsNotExist(err) {
		t.Fatalf("binary still there after uninstall: %v", err)
	}
}

func TestHiveInstallBadBinaryFailsVersionCheck(t *testing.T) {
	h := newSSHHive(t, "hive-1", true)
	bin := filepath.Join(t.TempDir(), "rbee-hive")
	_ = os.WriteFile(bin, []byte("#!/bin/sh\necho broken >&2\nexit 3\n"), 0o644)
	q := h.queen(t, func(c *config.Queen) { c.HiveBinary = bin })
	out := q.run(t, api.JobRequest{Operation: api.OpHiveInstall, Alias: "hive-1"})
	wantError(t, out, "hive-1: checking the installed binary failed on rbee@127.0.0.1 (exit 3): broken")
}

func TestHiveStartStatusStop(t *testing.T) {
	h := newSSHHive(t, "hive-1", true)
	h.installFakeHive(t, "")
	q := h.queen(t, nil)
	out := q.run(t, api.JobRequest{Operation: api.OpHiveStart, Alias: "hive-1"})
	wantDone(t, out)
	res, _ := client.Results[map[string]any](out)
	pidData, err := os.ReadFile(h.path(".local/state/rbee/rbee-hive.pid"))
	if err != nil {
		t.Fatalf("no pid file: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidData)))
	if len(res) != 1 || int(res[0]["pid"].(float64)) != pid || pid <= 0 {
		t.Fatalf("start result %+v; pid file %q", res, pidData)
	}
	logData, _ := os.ReadFile(h.path(".local/state/rbee/rbee-hive.log"))
	wantArgs := fmt.Sprintf("--port %d --hive-id hive-1 --queen-url http://queen.test:8500 --advertise-url http://127.0.0.1:%d", h.hive.HivePort, h.hive.HivePort)
	if !strings.Contains(string(logData), wantArgs) {
		t.Fatalf("hive log %q does not show args %q", logData, wantArgs)
	}
	if hs, _ := q.c.Hives(context.Background()); hs[0].State != api.HiveOnline || len(hs[0].Devices) != 1 {
		t.Fatalf("after start: %+v", hs[0])
	}
	// Already healthy → done without starting another.
	out = q.run(t, api.JobRequest{Operation: api.OpHiveStart, Alias: "hive-1"})
	wantDone(t, out)
	out = q.run(t, api.JobRequest{Operation: api.OpHiveStatus, Alias: "hive-1"})
	st, _ := client.Results[api.HiveStatus](out)
	if len(st) != 1 || st[0].State != api.HiveOnline {
		t.Fatalf("status = %+v", st)
	}
	out = q.run(t, api.JobRequest{Operation: api.OpHiveStop, Alias: "hive-1"})
	wantDone(t, out)
	if state, _ := q.s.probe(context.Background(), fmt.Sprintf("http://127.0.0.1:%d", h.hive.HivePort)); state != api.HiveOffline {
		t.Fatalf("hive still answers after stop: %s", state)
	}
	if _, err := os.Stat(h.path(".local/state/rbee/rbee-hive.pid")); !os.IsNotExist(err) {
		t.Fatalf("pid file not removed: %v", err)
	}
	if hs, _ := q.c.Hives(context.Background()); hs[0].State != api.HiveOffline {
		t.Fatalf("after stop: state %q", hs[0].State)
	}
	// Stopping a stopped hive is fine.
	wantDone(t, q.run(t, api.JobRequest{Operation: api.OpHiveStop, Alias: "hive-1"}))
}

// A hive that ignores /v1/shutdown is stopped by SIGTERM of its recorded pid.
func TestHiveStopFallsBackToRecordedPid(t *testing.T) {
	h := newSSHHive(t, "hive-1", true)
	signals := filepath.Join(t.TempDir(), "signals")
	h.installFakeHive(t, "RBEE_FAKE_HIVE_IGNORE_SHUTDOWN=1 RBEE_FAKE_HIVE_SIGNALS="+signals)
	// stop_timeout is both the wait for the ignored shutdown (spent in
	// full) and the grace between TERM and KILL (killGrace). The hive
	// writes down the TERM it gets, so the test checks at the receiver; a
	// race-built process can still take seconds to finish exiting on a
	// loaded machine, when the queen rightly follows with KILL, so the
	// narration may name either, but never KILL without the TERM first.
	q := h.queen(t, func(c *config.Queen) { c.Lifecycle.StopTimeout = config.Duration(5 * time.Second) })
	wantDone(t, q.run(t, api.JobRequest{Operation: api.OpHiveStart, Alias: "hive-1"}))
	out := q.run(t, api.JobRequest{Operation: api.OpHiveStop, Alias: "hive-1"})
	wantDone(t, out)
	found := false
	for _, n := range narrations(t, out) {
		found = found || strings.Contains(n.Message, "pid and signal ")
	}
	if !found {
		t.Fatalf("no narration of the signal sent: %+v", narrations(t, out))
	}
	if got, err := os.ReadFile(signals); err != nil || string(got) != "TERM\n" {
		t.Fatalf("the hive recorded %q (%v), want TERM: it was not sent SIGTERM; narrations %+v", got, err, narrations(t, out))
	}
	if state, _ := q.s.probe(context.Background(), fmt.Sprintf("http://127.0.0.1:%d", h.hive.HivePort)); state != api.HiveOffline {
		t.Fatalf("hive still answers after stop: %s", state)
	}
}

func TestHiveStartNotInstalled(t *testing.T) {
	h := newSSHHive(t, "hive-1", true)
	q := h.queen(t, nil)
	out := q.run(t, api.JobRequest{Operation: api.OpHiveStart, Alias: "hive-1"})
	wantError(t, out, "hive-1: rbee-hive is not installed at ~/.local/bin/rbee-hive on 127.0.0.1; run hive_install first")
}

func TestSSHErrorsNameUserHostAndCause(t *testing.T) {
	h := newSSHHive(t, "hive-1", false) // the queen's key is not authorized
	q := h.queen(t, nil)
	out := q.run(t, api.JobRequest{Operation: api.OpHiveStart, Alias: "hive-1"})
	wantError(t, out, "hive-1:", fmt.Sprintf("rbee@127.0.0.1:%d", h.srv.Port), "authentication failed")

	h2 := newSSHHive(t, "hive-1", true)
	other := sshtest.New(t) // a different host key under the same name
	_ = os.WriteFile(h2.known, []byte(other.KnownHostsLine(h2.srv.Addr)+"\n"), 0o600)
	q2 := h2.queen(t, nil)
	out = q2.run(t, api.JobRequest{Operation: api.OpHiveStart, Alias: "hive-1"})
	wantError(t, out, "hive-1:", "host key")

	down := newSSHHive(t, "hive-1", true)
	down.hive.SSHPort = closedPort(t)
	q3 := down.queen(t, nil)
	out = q3.run(t, api.JobRequest{Operation: api.OpHiveStart, Alias: "hive-1"})
	wantError(t, out, "hive-1:", fmt.Sprintf("rbee@127.0.0.1:%d", down.hive.SSHPort), "refused")
}

// A hive that exits at once fails hive_start quickly, with its log tail.
func TestHiveStartExitsAtOnce(t *testing.T) {
	h := newSSHHive(t, "hive-1", true)
	_ = os.MkdirAll(h.path(".local/bin"), 0o755)
	_ = os.WriteFile(h.path(".local/bin/rbee-hive"), []byte("#!/bin/sh\necho 'bind: address already in use'\nexit 1\n"), 0o755)
	q := h.queen(t, nil)
	start := time.Now()
	out := q.run(t, api.JobRequest{Operation: api.OpHiveStart, Alias: "hive-1"})
	wantError(t, out, "hive-1: rbee-hive (pid", "exited during start: bind: address already in use")
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("took %s (start_timeout is 10s)", d)
	}
}

// Cancelling hive_start while it waits for /health ends it [CANCELLED].
func TestHiveStartCancel(t *testing.T) {
	h := newSSHHive(t, "hive-1", true)
	_ = os.MkdirAll(h.path(".local/bin"), 0o755)
	_ = os.WriteFile(h.path(".local/bin/rbee-hive"), []byte("#!/bin/sh\nexec sleep 30 # rbee-hive that never answers\n"), 0o755)
	q := h.queen(t, nil)
	ctx := context.Background()
	acc, err := q.c.Submit(ctx, api.JobRequest{Operation: api.OpHiveStart, Alias: "hive-1"})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, func() (bool, string) {
		_, err := os.Stat(h.path(".local/state/rbee/rbee-hive.pid"))
		return err == nil, fmt.Sprint(err)
	})
	if _, err := q.c.Cancel(ctx, acc.JobID); err != nil {
		t.Fatal(err)
	}
	out, _ := q.c.Follow(ctx, acc.JobID, 0, nil)
	if out.Kind.String() != api.TermCancelled {
		t.Fatalf("ended %s", out.Terminator())
	}
	pid, _ := os.ReadFile(h.path(".local/state/rbee/rbee-hive.pid"))
	if p, _ := strconv.Atoi(strings.TrimSpace(string(pid))); p > 0 {
		_ = syscallKill(p)
	}
}

// Concurrent installs to one hive all succeed: removing stale temporaries
// never deletes the temporary of an upload still running.
func TestConcurrentInstallsKeepEachOthersTemporaries(t *testing.T) {
	h := newSSHHive(t, "hive-1", true)
	bin := filepath.Join(t.TempDir(), "rbee-hive")
	// Big enough that uploads overlap.
	script := "#!/bin/sh\necho 'rbee-hive 9.9.9 (test)'\nexit 0\n#" + strings.Repeat("x", 4<<20) + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	q := h.queen(t, func(c *config.Queen) { c.HiveBinary = bin })
	var wg sync.WaitGroup
	outs := make([]client.Outcome, 6)
	// Each install's bound is the queen's own: a connect and at most five
	// SSH operations (exists, mkdir, rm, the upload, --version), each within
	// command_timeout; max_sessions_per_host of them run at a time, the
	// rest wait their round. On a loaded machine six concurrent 4 MB
	// installs can take longer than any generic budget.
	ssh := q.s.cfg.SSH
	rounds := (len(outs) + ssh.MaxSessionsPerHost - 1) / ssh.MaxSessionsPerHost
	within := time.Duration(rounds) * (ssh.ConnectTimeout.D() + 5*ssh.CommandTimeout.D())
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = q.runWithin(t, within, api.JobRequest{Operation: api.OpHiveInstall, Alias: "hive-1", Force: true})
		}()
	}
	wg.Wait()
	for i, o := range outs {
		if o.Kind != sse.Done {
			t.Errorf("install %d ended %s", i, o.Terminator())
		}
	}
	if entries, _ := os.ReadDir(h.path(".local/bin")); len(entries) != 1 {
		t.Fatalf("want only the binary left, have %v", entries)
	}
}

// hive_start does not orphan a recorded daemon that runs but does not
// answer: it names the pid and points to hive_stop.
func TestHiveStartRefusesWhileRecordedHiveHangs(t *testing.T) {
	h := newSSHHive(t, "hive-1", true)
	h.installFakeHive(t, "")
	q := h.queen(t, nil)
	wantDone(t, q.run(t, api.JobRequest{Operation: api.OpHiveStart, Alias: "hive-1"}))
	pidData, err := os.ReadFile(h.path(".local/state/rbee/rbee-hive.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidData)))
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	awaitStopped(t, pid)
	out := q.run(t, api.JobRequest{Operation: api.OpHiveStart, Alias: "hive-1"})
	wantError(t, out, fmt.Sprintf("rbee-hive (pid %d) is already running", pid), "hive_stop")
	if after, _ := os.ReadFile(h.path(".local/state/rbee/rbee-hive.pid")); string(after) != string(pidData) {
		t.Fatalf("pid file changed from %q to %q", pidData, after)
	}
	_ = syscall.Kill(pid, syscall.SIGCONT)
	wantDone(t, q.run(t, api.JobRequest{Operation: api.OpHiveStop, Alias: "hive-1"}))
}

// A pid file whose pid now belongs to a process that started after the file
// was written (pid reuse, e.g. after a container restart) is not "our
// hive": hive_start goes ahead, and the stranger is left alone.
func TestHiveStartIgnoresAReusedPid(t *testing.T) {
	h := newSSHHive(t, "hive-1", true)
	h.installFakeHive(t, "")
	q := h.queen(t, nil)
	stranger := exec.Command("bash", "-c", "exec -a rbee-hive-lookalike sleep 60")
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stranger.Process.Kill(); _ = stranger.Wait() }()
	pidFile := h.path(".local/state/rbee/rbee-hive.pid")
	if err := os.MkdirAll(filepath.Dir(pidFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(stranger.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(pidFile, old, old); err != nil {
		t.Fatal(err)
	}
	wantDone(t, q.run(t, api.JobRequest{Operation: api.OpHiveStart, Alias: "hive-1"}))
	if err := stranger.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the stranger was signalled: %v", err)
	}
	wantDone(t, q.run(t, api.JobRequest{Operation: api.OpHiveStop, Alias: "hive-1"}))
}
