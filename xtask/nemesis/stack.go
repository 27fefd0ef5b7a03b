package nemesis

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/rbee-dev/rbee/xtask/integration"
)

// Beat is the heartbeat interval a nemesis stack runs with (the compose
// files' default, set explicitly so the health bounds know it).
const Beat = 500 * time.Millisecond

// StackOptions are the harness options of a nemesis stack: the heartbeat
// interval its health bounds are derived from.
func StackOptions() []integration.Option {
	return []integration.Option{integration.WithEnv(map[string]string{"RBEE_HEARTBEAT_INTERVAL": Beat.String()})}
}

var staleRE = regexp.MustCompile(`(?m)^stale_after\s*=\s*"([^"]+)"`)

// StaleAfter reads [heartbeat] stale_after from the queen configuration of
// topo in the repository at root.
func StaleAfter(root string, topo integration.Topology) (time.Duration, error) {
	p := filepath.Join(root, topo.Configs(), "queen.toml")
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	m := staleRE.FindSubmatch(b)
	if m == nil {
		return 0, fmt.Errorf("%s: no stale_after", p)
	}
	d, err := time.ParseDuration(string(m[1]))
	if err != nil {
		return 0, fmt.Errorf("%s: stale_after: %w", p, err)
	}
	return d, nil
}

// RunSeed brings topo up on its own stack, runs cfg (Prepare, then Run)
// and removes the stack; a failed or violating run first writes the
// stack's artifacts (logs, fault transcript) and its report to
// artifacts/nemesis-seed-N. It is what `mage nemesis` runs per seed.
func RunSeed(ctx context.Context, root string, topo integration.Topology, cfg Config) (res Result, err error) {
	name := fmt.Sprintf("nemesis-seed-%d", cfg.Seed)
	opts := append(StackOptions(), integration.WithName(name), integration.WithRepoDir(root))
	if cfg.Logf != nil {
		opts = append(opts, integration.WithLog(cfg.Logf))
	}
	h, err := integration.New(ctx, topo, opts...)
	defer func() {
		if h == nil {
			return
		}
		if err != nil || res.Verdict() != "pass" {
			dir := integration.ArtifactsDir(root, name)
			if _, aerr := h.CollectArtifacts(context.WithoutCancel(ctx), dir, 20); aerr == nil {
				_ = os.WriteFile(filepath.Join(dir, "nemesis.txt"), []byte(res.Report()+"\n"), 0o644)
			}
		}
		if cerr := h.Close(context.WithoutCancel(ctx)); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err != nil {
		return Result{}, fmt.Errorf("seed %d: start %s: %w", cfg.Seed, topo, err)
	}
	sys, err := Prepare(ctx, h, cfg)
	if err != nil {
		return Result{}, fmt.Errorf("seed %d: prepare: %w", cfg.Seed, err)
	}
	res, err = Run(ctx, sys)
	if err != nil {
		return res, fmt.Errorf("seed %d: %w", cfg.Seed, err)
	}
	return res, nil
}
