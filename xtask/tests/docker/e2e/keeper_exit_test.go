//go:build docker

package e2e

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// rbee-keeper's exit code says how the job ended (docs/PROTOCOL.md): 0
// [DONE], 1 [ERROR], 2 a request the queen rejects with 400, 130 a job
// cancelled with Ctrl-C. Each case is checked against what the queen
// itself recorded for the job, so a wrong code cannot hide behind a wrong
// job.
func TestKeeperExitCodes(t *testing.T) {
	t.Parallel()
	h := integration.Start(t, integration.FullStack, integration.WithServices("queen", "worker-1"))
	q := h.MustQueen(t)
	ctx := suite.Context(t, 4*opTimeout)
	if _, err := checks.AwaitWorker(ctx, q, "worker-1", stateTimeout, "fresh", checks.Fresh); err != nil {
		t.Fatal(err)
	}
	queen := q.BaseURL()

	// 0: a job that ends [DONE] (the negative control of the cases below).
	ok := runKeeper(t, "--queen", queen, "infer", "--model", suite.TinyModel, "--max-tokens", "5", "--seed", "1", "Alice")
	if ok.code != 0 {
		t.Fatalf("rbee-keeper infer: exit %d; want 0\nstderr:\n%s", ok.code, ok.stderr)
	}
	if st, err := q.Job(ctx, ok.jobID(t)); err != nil || st.State != api.StateCompleted {
		t.Fatalf("queen's record of the keeper's infer: %+v, %v; want completed", st, err)
	}

	// 1: a job the queen accepted that ends [ERROR] (no worker serves it).
	failed := runKeeper(t, "--queen", queen, "infer", "--model", "rbee/no-such-model:model.bin", "--max-tokens", "5", "Alice")
	if failed.code != 1 {
		t.Errorf("rbee-keeper infer of a model nobody serves: exit %d; want 1\nstderr:\n%s", failed.code, failed.stderr)
	}
	if st, err := q.Job(ctx, failed.jobID(t)); err != nil || st.State != api.StateFailed {
		t.Errorf("queen's record of the failed infer: %+v, %v; want failed", st, err)
	}
	if !strings.Contains(failed.stderr, "no ready worker") {
		t.Errorf("rbee-keeper's stderr does not give the [ERROR]'s cause (no ready worker):\n%s", failed.stderr)
	}

	// 2: a request the queen rejects (400) before any job exists.
	rejected := runKeeper(t, "--queen", queen, "hive", "get", "-a", "no-such-hive")
	if rejected.code != 2 {
		t.Errorf("rbee-keeper hive get of an unknown alias: exit %d; want 2\nstderr:\n%s", rejected.code, rejected.stderr)
	}
	if !strings.Contains(rejected.stderr, "no-such-hive") || acceptedLine.MatchString(rejected.stderr) {
		t.Errorf("rbee-keeper hive get of an unknown alias: stderr does not name the alias, or says a job was accepted:\n%s", rejected.stderr)
	}

	// 130: Ctrl-C while a long generation runs (2000 tokens at the
	// worker's 5 ms token delay: at least 10 s, and the interrupt is sent
	// as soon as the keeper says the job was accepted).
	code, stderr, jobID := interruptKeeper(t, "--queen", queen, "infer", "--model", suite.TinyModel, "--max-tokens", "2000", "--seed", "2", "Alice")
	if code != 130 {
		t.Errorf("rbee-keeper infer interrupted: exit %d; want 130\nstderr:\n%s", code, stderr)
	}
	if st, err := q.Job(ctx, jobID); err != nil || st.State != api.StateCancelled {
		t.Errorf("queen's record of the interrupted infer: %+v, %v; want cancelled", st, err)
	}
}

// interruptKeeper starts rbee-keeper, sends it SIGINT once it printed that
// the queen accepted the job, and returns its exit code, its stderr and the
// job id.
func interruptKeeper(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), keeperTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, keeperBin, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Stdout = io.Discard
	pr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	jobID := ""
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		stderr.WriteString(line + "\n")
		if m := acceptedLine.FindStringSubmatch(line); m != nil && jobID == "" {
			jobID = m[1]
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatalf("SIGINT to rbee-keeper: %v", err)
			}
		}
	}
	err = cmd.Wait()
	code := 0
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		code = ee.ExitCode()
	default:
		t.Fatalf("rbee-keeper %s: %v (ctx %v)\nstderr:\n%s", strings.Join(args, " "), err, ctx.Err(), stderr.String())
	}
	if jobID == "" {
		t.Fatalf("rbee-keeper never said the queen accepted the job (exit %d); stderr:\n%s", code, stderr.String())
	}
	return code, stderr.String(), jobID
}
