package integration

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	rbeeclient "github.com/rbee-dev/rbee/internal/client"
)

// Start is New for tests: it names the stack after t.Name(), logs through
// t.Logf, and registers cleanup before checking New's error, so that even a
// failed bring-up is cleaned up. When the test has failed, cleanup first
// writes artifacts (see CollectArtifacts) to ArtifactsDir and logs the
// summary ("artifacts: <dir>" first, then each log's last lines); with
// RBEE_KEEP_FAILED=1 a failed test's stack is kept and the log says how to
// remove it. Cleanup also runs after a panic in the test.
func Start(t testing.TB, topo Topology, opts ...Option) *Harness {
	t.Helper()
	if why, err := shardSkip(topo); err != nil {
		t.Fatal(err)
	} else if why != "" {
		t.Skip(why)
	}
	all := append([]Option{WithName(t.Name()), WithLog(t.Logf)}, opts...)
	h, err := New(context.Background(), topo, all...)
	t.Cleanup(func() { cleanup(t, h) })
	if err != nil {
		t.Fatalf("start %s: %v", topo, err)
	}
	h.tl.watchTest(t.Failed)
	return h
}

func cleanup(t testing.TB, h *Harness) {
	if h == nil {
		return
	}
	ctx := context.Background()
	if t.Failed() && h.docker != nil {
		sum, err := h.CollectArtifacts(ctx, ArtifactsDir(h.repoDir, t.Name()), 20)
		t.Log(sum)
		if err != nil {
			t.Logf("artifacts incomplete: %v", err)
		}
	} else if !t.Failed() {
		// Before the report, so that its links include capture.pcap.
		h.captureOnPass(t)
	}
	writeReport(t, h)
	if t.Failed() && h.docker != nil {
		if os.Getenv("RBEE_KEEP_FAILED") == "1" {
			if msg, err := h.Keep(ctx); err == nil {
				t.Log(msg)
				return
			} else {
				t.Logf("could not keep the stack: %v", err)
			}
		}
	}
	if err := h.Close(ctx); err != nil {
		t.Errorf("close %s: %v", h.name, err)
	}
}

// mustCtx is the context of a Must call: the test's own (t.Context,
// cancelled when the test ends), ending early enough before the test
// binary's deadline (go test -timeout) that the failure is reported and
// the cleanup runs. Must calls therefore cannot be made from a t.Cleanup
// function, whose test context has already ended.
func mustCtx(t testing.TB) (context.Context, context.CancelFunc) {
	ctx := t.Context()
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			if early := dl.Add(-mustMargin); time.Until(early) > 0 {
				dl = early
			}
			return context.WithDeadline(ctx, dl)
		}
	}
	return context.WithCancel(ctx)
}

// mustMargin is how long before the test binary's deadline a Must call
// gives up: time to collect artifacts and remove the stack.
const mustMargin = time.Minute

// MustExec is Exec that fails the test if the command cannot be run (a
// non-zero exit code is returned, not fatal).
func (h *Harness) MustExec(t testing.TB, svc string, cmd []string, opts ...ExecOption) CommandResult {
	t.Helper()
	ctx, cancel := mustCtx(t)
	defer cancel()
	r, err := h.Exec(ctx, svc, cmd, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// MustURL is URL that fails the test on error.
func (h *Harness) MustURL(t testing.TB, svc string, port int) string {
	t.Helper()
	u, err := h.URL(svc, port)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// MustQueen is Queen that fails the test on error.
func (h *Harness) MustQueen(t testing.TB) *rbeeclient.Client {
	t.Helper()
	c, err := h.Queen()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// MustSSH is SSH that fails the test on error and closes the client at cleanup.
func (h *Harness) MustSSH(t testing.TB, svc string) *ssh.Client {
	t.Helper()
	ctx, cancel := mustCtx(t)
	defer cancel()
	c, err := h.SSH(ctx, svc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// MustLogs is Logs that fails the test on error.
func (h *Harness) MustLogs(t testing.TB, svc string) string {
	t.Helper()
	ctx, cancel := mustCtx(t)
	defer cancel()
	s, err := h.Logs(ctx, svc)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (h *Harness) must(t testing.TB, f func(context.Context) error) {
	t.Helper()
	ctx, cancel := mustCtx(t)
	defer cancel()
	if err := f(ctx); err != nil {
		h.tl.failure(err)
		t.Fatal(err)
	}
}

// MustRestart is Restart that fails the test on error.
func (h *Harness) MustRestart(t testing.TB, svc string) {
	t.Helper()
	h.must(t, func(ctx context.Context) error { return h.Restart(ctx, svc) })
}

// MustStop is Stop that fails the test on error.
func (h *Harness) MustStop(t testing.TB, svc string) {
	t.Helper()
	h.must(t, func(ctx context.Context) error { return h.Stop(ctx, svc) })
}

// MustStartService is StartService that fails the test on error.
func (h *Harness) MustStartService(t testing.TB, svc string) {
	t.Helper()
	h.must(t, func(ctx context.Context) error { return h.StartService(ctx, svc) })
}

// MustKill is Kill that fails the test on error.
func (h *Harness) MustKill(t testing.TB, svc string) {
	t.Helper()
	h.must(t, func(ctx context.Context) error { return h.Kill(ctx, svc) })
}

// MustSignal is Signal that fails the test on error.
func (h *Harness) MustSignal(t testing.TB, svc string, sig syscall.Signal) {
	t.Helper()
	h.must(t, func(ctx context.Context) error { return h.Signal(ctx, svc, sig) })
}

// MustPause is Pause that fails the test on error.
func (h *Harness) MustPause(t testing.TB, svc string) {
	t.Helper()
	h.must(t, func(ctx context.Context) error { return h.Pause(ctx, svc) })
}

// MustUnpause is Unpause that fails the test on error.
func (h *Harness) MustUnpause(t testing.TB, svc string) {
	t.Helper()
	h.must(t, func(ctx context.Context) error { return h.Unpause(ctx, svc) })
}

// MustInject is Inject that fails the test on error.
func (h *Harness) MustInject(t testing.TB, f Fault) {
	t.Helper()
	h.must(t, func(ctx context.Context) error { return h.Inject(ctx, f) })
}

// MustRecover is Recover that fails the test on error.
func (h *Harness) MustRecover(t testing.TB, f Fault) {
	t.Helper()
	h.must(t, func(ctx context.Context) error { return h.Recover(ctx, f) })
}

// MustRecoverAll is RecoverAll that fails the test on error.
func (h *Harness) MustRecoverAll(t testing.TB) {
	t.Helper()
	h.must(t, h.RecoverAll)
}

// MustWaitForHealthy is WaitForHealthy that fails the test on error.
func (h *Harness) MustWaitForHealthy(t testing.TB, svc string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := mustCtx(t)
	defer cancel()
	if err := h.WaitForHealthy(ctx, svc, timeout); err != nil {
		t.Fatal(err)
	}
}

// MustWaitForExit is WaitForExit that fails the test on error.
func (h *Harness) MustWaitForExit(t testing.TB, svc string, timeout time.Duration) int {
	t.Helper()
	ctx, cancel := mustCtx(t)
	defer cancel()
	code, err := h.WaitForExit(ctx, svc, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return code
}
