package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/rbee-dev/rbee/xtask/integration"
)

// CapturePackage is the Docker suite package the capture overhead is
// measured on: eight tests, each bringing up one or more stacks.
const CapturePackage = "heartbeat"

// CaptureResult is one suite package's wall time with packet capture off
// and on (integration.CaptureEnv), in interleaved runs.
type CaptureResult struct {
	Package string
	Off, On []time.Duration
	Failed  []string // runs whose tests failed ("on #2"): their times are kept but suspect
}

// CaptureOverhead builds the package's test binary once, then runs it
// rounds times with RBEE_CAPTURE=off and =on, alternating which goes first
// each round so that a machine's drifting load is spread over both.
func CaptureOverhead(ctx context.Context, root, pkg string, rounds int, logf func(string, ...any)) (CaptureResult, error) {
	r := CaptureResult{Package: pkg}
	if rounds <= 0 {
		return r, fmt.Errorf("capture overhead: %d rounds: want at least 1", rounds)
	}
	dir := filepath.Join(root, "xtask", "tests", "docker", pkg)
	tmp, err := os.MkdirTemp("", "rbee-bench-capture-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, pkg+".test")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-tags", "docker", "-o", bin, "./xtask/tests/docker/"+pkg+"/")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return r, fmt.Errorf("capture overhead: build %s tests: %v\n%s", pkg, err, out)
	}
	for i := range rounds {
		modes := []string{integration.CaptureOff, integration.CaptureOn}
		if i%2 == 1 {
			modes[0], modes[1] = modes[1], modes[0]
		}
		for _, mode := range modes {
			cmd := exec.CommandContext(ctx, bin, "-test.count=1")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), integration.CaptureEnv+"="+mode)
			t0 := time.Now()
			out, err := cmd.CombinedOutput()
			wall := time.Since(t0)
			if ctx.Err() != nil {
				return r, ctx.Err()
			}
			what := mode + " #" + strconv.Itoa(i+1)
			if err != nil {
				r.Failed = append(r.Failed, what)
				logf("capture overhead: %s %s failed (%v); last output:\n%s", pkg, what, err, lastLines(string(out), 20))
			}
			logf("capture overhead: %s with %s=%s: %v", pkg, integration.CaptureEnv, mode, wall.Round(time.Millisecond))
			if mode == integration.CaptureOff {
				r.Off = append(r.Off, wall)
			} else {
				r.On = append(r.On, wall)
			}
		}
	}
	return r, nil
}

func lastLines(s string, n int) string {
	end := len(s)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' && i < len(s)-1 {
			n--
			if n == 0 {
				return s[i+1 : end]
			}
		}
	}
	return s
}

// CaptureTable reports the capture overhead (target < 5 % of the wall time)
// and its headline line.
func CaptureTable(r CaptureResult) (string, Table) {
	off, on := Summarize(Seconds(r.Off)), Summarize(Seconds(r.On))
	over := Ratio(on.Median, off.Median) - 1
	t := Table{Title: "Packet capture overhead (" + r.Package + " suite package)",
		Header: []string{integration.CaptureEnv, "runs", "median wall", "min–max"},
		Notes: []string{
			"`go test -tags docker -count=1` of xtask/tests/docker/" + r.Package + " (binary built before the clock), off and on interleaved, the order swapped each round",
			fmt.Sprintf("on: every stack's bridges captured by rbee-capture in a helper container (ring %d MiB, snaplen %d), started alongside compose create and awaited before the first container starts; passing tests discard it", integration.CaptureLimit>>20, integration.CaptureSnaplen),
		}}
	t.Add("off", strconv.Itoa(off.N), Secs(off.Median), Spread(off))
	t.Add("on", strconv.Itoa(on.N), Secs(on.Median), Spread(on))
	t.Add("overhead (on / off − 1, medians)", "", fmt.Sprintf("%+.1f %%", 100*over), "")
	if len(r.Failed) > 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("runs with failed tests (times kept): %v", r.Failed))
	}
	head := fmt.Sprintf("capture overhead on the %s suite package: %s off vs %s on = %+.1f %% (target < 5 %%): %s",
		r.Package, Secs(off.Median), Secs(on.Median), 100*over, verdict(over < 0.05 && off.N > 0 && on.N > 0))
	return head, t
}
