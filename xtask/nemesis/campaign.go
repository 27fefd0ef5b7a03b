package nemesis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/rbee-dev/rbee/xtask/integration"
)

// CampaignOptions are a `mage nemesis` run: how many seeds (or the one in
// RBEE_FAULT_SEED), how long each schedule is, and where the table goes.
type CampaignOptions struct {
	Root     string // repository root
	Seeds    int
	Duration time.Duration
	Verbose  bool   // stream each run's harness log
	Report   string // Markdown file the table is appended to ("" = none)
	Command  string // how the run was started, for the report
}

// Campaign runs each seed on a fresh multi-hive stack (RunSeed), prints a
// line per seed as it finishes and then the table, and appends the table
// (with every failing seed's report) to o.Report. It fails if any seed had
// a violation or could not be run.
func Campaign(ctx context.Context, o CampaignOptions, w io.Writer) error {
	seeds, err := Seeds(o.Seeds)
	if err != nil {
		return err
	}
	if o.Duration <= 0 {
		return fmt.Errorf("nemesis: duration %v: want a positive duration such as 60s", o.Duration)
	}
	topo := integration.MultiHive
	stale, err := StaleAfter(o.Root, topo)
	if err != nil {
		return err
	}
	var results []Result
	var errs []error
	for i, seed := range seeds {
		cfg := Config{Seed: seed, Duration: o.Duration, Beat: Beat, StaleAfter: stale}
		if o.Verbose {
			cfg.Logf = func(f string, a ...any) { fmt.Fprintf(w, f+"\n", a...) }
		}
		t0 := time.Now()
		res, err := RunSeed(ctx, o.Root, topo, cfg)
		if res.Wall == 0 {
			res.Wall = time.Since(t0)
		}
		res.Schedule.Seed, res.Err = seed, err
		results = append(results, res)
		switch {
		case err != nil:
			errs = append(errs, err)
			fmt.Fprintf(w, "seed %d (%d/%d): ERROR %v\n%s\n", seed, i+1, len(seeds), err, res.Report())
		case res.Verdict() != "pass":
			errs = append(errs, fmt.Errorf("seed %d: %d violations", seed, len(res.Violations)))
			fmt.Fprintf(w, "seed %d (%d/%d): FAIL\n%s\n", seed, i+1, len(seeds), res.Report())
		default:
			fmt.Fprintf(w, "seed %d (%d/%d): pass: %d faults (%s), %d jobs done, %d not done, in %v\n", seed, i+1, len(seeds), len(res.Schedule.Events), res.Schedule.Kinds(), res.Done(), res.Failed(), res.Wall.Round(time.Second))
		}
		if ctx.Err() != nil {
			break
		}
	}
	fmt.Fprintf(w, "\n%s", Table(results))
	if o.Report != "" {
		if err := AppendReport(o.Report, o.Command, results); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(w, "appended to %s\n", o.Report)
		}
	}
	return errors.Join(errs...)
}
