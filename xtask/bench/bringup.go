package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/rbee-dev/rbee/xtask/dockerx"
	"github.com/rbee-dev/rbee/xtask/integration"
)

// BringUpResult holds one topology's interleaved samples.
type BringUpResult struct {
	Topology                string
	HarnessUp, HarnessClose []time.Duration
	CLIUp, CLIDown          []time.Duration
	// FloorUp, FloorDown: the raw-SDK floor (Floor), measured in the same
	// interleaved loop (localhost only: the targets are set for it).
	FloorUp, FloorDown []time.Duration
	// Phases are the harness's own steps (integration.Phase), per run, in
	// the order New and Close took them.
	Phases     map[string][]time.Duration
	PhaseOrder []string
}

// BringUp measures topo n times with the harness and n times with the
// Compose CLI, interleaved (harness, CLI, harness, CLI …) so that a change of
// machine load hits both alike. Harness: New (→ every service healthy by its
// own checks) and Close. CLI: `up --wait` (→ Docker reports every container
// healthy) and `down -v`.
func BringUp(ctx context.Context, root, composeBin string, topo integration.Topology, n int, logf func(string, ...any)) (BringUpResult, error) {
	res := BringUpResult{Topology: topo.String()}
	file := filepath.Join(root, topo.File())
	content, err := os.ReadFile(file)
	if err != nil {
		return res, err
	}
	d, err := dockerx.Connect(ctx)
	if err != nil {
		return res, err
	}
	defer d.Close()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid())))
	for i := 0; i < n; i++ {
		// Harness.
		t0 := time.Now()
		h, err := integration.New(ctx, topo, integration.WithName(fmt.Sprintf("bench-%s-%d", topo, i)), integration.WithRepoDir(root))
		up := time.Since(t0)
		if err != nil {
			_ = h.Close(context.WithoutCancel(ctx))
			return res, fmt.Errorf("harness %s run %d: %w", topo, i+1, err)
		}
		t0 = time.Now()
		if err := h.Close(ctx); err != nil {
			return res, fmt.Errorf("harness %s close %d: %w", topo, i+1, err)
		}
		res.HarnessUp, res.HarnessClose = append(res.HarnessUp, up), append(res.HarnessClose, time.Since(t0))
		if res.Phases == nil {
			res.Phases = map[string][]time.Duration{}
		}
		for _, ph := range h.Phases() {
			if _, ok := res.Phases[ph.Name]; !ok {
				res.PhaseOrder = append(res.PhaseOrder, ph.Name)
			}
			res.Phases[ph.Name] = append(res.Phases[ph.Name], ph.Took)
		}
		if topo == integration.Localhost {
			fr, err := Floor(ctx, root, topo, i, rng)
			if err != nil {
				return res, fmt.Errorf("raw-SDK floor %s run %d: %w", topo, i+1, err)
			}
			res.FloorUp, res.FloorDown = append(res.FloorUp, fr.Up), append(res.FloorDown, fr.Down)
			logf("  %s run %d/%d: raw-SDK floor up %s down %s", topo, i+1, n, Dur(fr.Up), Dur(fr.Down))
		}

		// Compose CLI, own subnet and project name.
		used, err := dockerx.UsedSubnets(ctx, d)
		if err != nil {
			return res, err
		}
		subnet, err := PickSubnet(used, rng)
		if err != nil {
			return res, err
		}
		env, err := ComposeEnv(string(content), subnet)
		if err != nil {
			return res, err
		}
		c := composeRun{bin: composeBin, file: file, project: fmt.Sprintf("rbee-bench-cli-%s-%d-%06x", topo, i, rng.IntN(1<<24)), env: env}
		up, err = c.up(ctx)
		d, derr := c.down(context.WithoutCancel(ctx)) // always, even after a failed up
		if err != nil {
			return res, fmt.Errorf("CLI %s run %d: %w", topo, i+1, err)
		}
		if derr != nil {
			return res, derr
		}
		res.CLIUp, res.CLIDown = append(res.CLIUp, up), append(res.CLIDown, d)
		logf("  %s run %d/%d: harness up %s close %s | CLI up %s down %s", topo, i+1, n,
			Dur(res.HarnessUp[i]), Dur(res.HarnessClose[i]), Dur(up), Dur(d))
	}
	return res, nil
}
