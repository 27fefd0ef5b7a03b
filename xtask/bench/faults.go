package bench

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rbee-dev/rbee/xtask/integration"
)

// FaultResult is the fault-injection latency of n block/restore cycles on
// one Localhost harness (hive-localhost → queen).
type FaultResult struct {
	BlockCall, RestoreCall     []time.Duration // how long the calls took (the first block creates the helper container)
	BlockEffect, RestoreEffect []time.Duration // call returned → traffic dropped / flowing; ≤ 0: already so on return
	ProbeEvery                 time.Duration
}

// probeStop is the file whose creation ends a probeScript's loop.
const probeStop = "/tmp/rbee-bench-probe-stop"

// probeScript starts an HTTP request from inside the container every 20 ms
// until probeStop exists (at most secs seconds), each in the background so
// a dropped one (which waits for its 300 ms timeout) does not delay the
// next, and prints each one's start time (ns, the host's clock: same
// kernel) and outcome. Ending on a signal rather than a fixed length keeps
// the window after a slow fault call as long as after a fast one.
func probeScript(url string, secs int) string {
	return fmt.Sprintf(`rm -f %[3]s
end=$(( $(date +%%s) + %[1]d ))
while [ ! -e %[3]s ] && [ "$(date +%%s)" -lt "$end" ]; do
  ( s=$(date +%%s%%N); if curl -fsS -o /dev/null -m 0.3 %[2]s 2>/dev/null; then echo "$s ok"; else echo "$s fail"; fi ) &
  sleep 0.02
done
wait`, secs, url, probeStop)
}

type probe struct {
	at time.Time
	ok bool
}

// parseProbes reads probeScript's output, sorted by start time.
func parseProbes(out string) ([]probe, error) {
	var ps []probe
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 || (f[1] != "ok" && f[1] != "fail") {
			return nil, fmt.Errorf("probe line %q: want \"<ns> ok|fail\"", line)
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("probe line %q: %w", line, err)
		}
		ps = append(ps, probe{at: time.Unix(0, ns), ok: f[1] == "ok"})
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].at.Before(ps[j].at) })
	return ps, nil
}

// effects finds, in probes around one block/restore cycle, when traffic
// stopped and started again. dropped: the start of the longest run of
// failed probes that begins before the restore call returned and lasts
// past the block call's return (a stray failure from load, earlier or
// later, makes a shorter run; and the run need not reach up to the restore
// call: a probe stamped just before it may have connected only after the
// rules were gone); flowing: the first successful probe after that run.
// Both are relative to the respective call's return. ok is false when the
// probes show no drop before the restore or no recovery after it.
func effects(ps []probe, blockReturned, restoreReturned time.Time) (block, restore time.Duration, ok bool) {
	d, n := -1, 0 // the chosen run's first probe and length
	for i := 0; i < len(ps) && ps[i].at.Before(restoreReturned); {
		if ps[i].ok {
			i++
			continue
		}
		j := i
		for j < len(ps) && !ps[j].ok {
			j++
		}
		if j-i >= n && ps[j-1].at.After(blockReturned) {
			d, n = i, j-i
		}
		i = j
	}
	if d < 0 {
		return 0, 0, false
	}
	f := d + n
	if f == len(ps) {
		return 0, 0, false
	}
	return ps[d].at.Sub(blockReturned), ps[f].at.Sub(restoreReturned), true
}

// runs summarises probes as run lengths ("12 ok, 40 fail, 70 ok") for an error.
func runs(ps []probe) string {
	var b strings.Builder
	for i := 0; i < len(ps); {
		j := i
		for j < len(ps) && ps[j].ok == ps[i].ok {
			j++
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		st := "fail"
		if ps[i].ok {
			st = "ok"
		}
		fmt.Fprintf(&b, "%d %s", j-i, st)
		i = j
	}
	return b.String()
}

// Faults runs n block/restore cycles of hive-localhost → queen on one
// Localhost harness, with the probe running inside hive-localhost.
func Faults(ctx context.Context, root string, n int, logf func(string, ...any)) (FaultResult, error) {
	res := FaultResult{ProbeEvery: 20 * time.Millisecond}
	h, err := integration.New(ctx, integration.Localhost, integration.WithName("bench-faults"), integration.WithRepoDir(root))
	defer func() { _ = h.Close(context.WithoutCancel(ctx)) }()
	if err != nil {
		return res, err
	}
	const secs = 60 // a bound only: each cycle stops its probe
	script := probeScript("http://queen:8500/health", secs)
	for i := 0; i < n; i++ {
		var wg sync.WaitGroup
		var out integration.CommandResult
		var perr error
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, perr = h.Exec(ctx, "hive-localhost", []string{"bash", "-c", script})
		}()
		// ~1 s of traffic, the block, ~1.2 s blocked, the restore, ~1.2 s
		// flowing, then the probe is told to stop.
		time.Sleep(time.Second)
		t0 := time.Now()
		if err := h.Inject(ctx, integration.Block("hive-localhost", "queen")); err != nil {
			wg.Wait()
			return res, err
		}
		blocked := time.Now()
		time.Sleep(1200 * time.Millisecond)
		t1 := time.Now()
		if err := h.Recover(ctx, integration.Block("hive-localhost", "queen")); err != nil {
			wg.Wait()
			return res, err
		}
		restored := time.Now()
		time.Sleep(1200 * time.Millisecond)
		if _, err := h.Exec(ctx, "hive-localhost", []string{"touch", probeStop}); err != nil {
			wg.Wait()
			return res, fmt.Errorf("stop the probe: %w", err)
		}
		wg.Wait()
		if perr != nil {
			return res, fmt.Errorf("probe: %w", perr)
		}
		ps, err := parseProbes(out.Stdout)
		if err != nil {
			return res, err
		}
		b, r, ok := effects(ps, blocked, restored)
		if !ok {
			return res, fmt.Errorf("cycle %d: the probe saw no drop before the restore or no recovery after it (probes in order: %s; block returned after %v, restore after %v; stderr %q)",
				i+1, runs(ps), blocked.Sub(t0), restored.Sub(t1), tail(out.Stderr, 5))
		}
		res.BlockCall = append(res.BlockCall, blocked.Sub(t0))
		res.RestoreCall = append(res.RestoreCall, restored.Sub(t1))
		res.BlockEffect = append(res.BlockEffect, b)
		res.RestoreEffect = append(res.RestoreEffect, r)
		logf("  fault cycle %d/%d: block call %s, dropped %s after return; restore call %s, flowing %s after return",
			i+1, n, Dur(blocked.Sub(t0)), Dur(b), Dur(restored.Sub(t1)), Dur(r))
	}
	return res, nil
}
