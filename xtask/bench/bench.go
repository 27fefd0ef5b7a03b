package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/rbee-dev/rbee/xtask/integration"
)

// Options configure a bench run. Zero values take the defaults in brackets;
// FromEnv reads them from RBEE_BENCH_* variables.
type Options struct {
	Root        string // repository root
	Out         string // report file [Root/docs/BENCHMARKS.md]
	Runs        int    // bring-up runs per tool and topology [5]
	FaultCycles int    // block/restore cycles [5]
	Suite       bool   // also run the whole Docker suite once
	// CaptureRounds is how many off/on pairs of the capture-overhead runs
	// (CaptureOverhead) [2; RBEE_BENCH_CAPTURE=0 skips them].
	CaptureRounds int
	// ToxicRounds is how many rounds of the toxic proxy's measurements
	// (Toxics) run [5; RBEE_BENCH_TOXICS=0 skips them].
	ToxicRounds int
	Loopback    LoopbackOptions
	Stdout      io.Writer // progress and tables [os.Stdout]
}

// FromEnv fills o from RBEE_BENCH_RUNS, RBEE_BENCH_FAULTS, RBEE_BENCH_SUITE
// (0 skips the suite), RBEE_BENCH_READERS, RBEE_BENCH_SUBMITS.
func (o *Options) FromEnv() error {
	ints := []struct {
		name string
		dst  *int
	}{
		{"RBEE_BENCH_RUNS", &o.Runs}, {"RBEE_BENCH_FAULTS", &o.FaultCycles},
		{"RBEE_BENCH_READERS", &o.Loopback.Readers}, {"RBEE_BENCH_SUBMITS", &o.Loopback.Submits},
	}
	for _, v := range ints {
		s := os.Getenv(v.name)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return fmt.Errorf("%s=%q: want a positive integer", v.name, s)
		}
		*v.dst = n
	}
	if s := os.Getenv("RBEE_BENCH_CAPTURE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return fmt.Errorf("RBEE_BENCH_CAPTURE=%q: want a number of rounds (0 skips)", s)
		}
		o.CaptureRounds = n
		if n == 0 {
			o.CaptureRounds = -1
		}
	}
	if s := os.Getenv("RBEE_BENCH_TOXICS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return fmt.Errorf("RBEE_BENCH_TOXICS=%q: want a number of rounds (0 skips)", s)
		}
		o.ToxicRounds = n
		if n == 0 {
			o.ToxicRounds = -1
		}
	}
	switch s := os.Getenv("RBEE_BENCH_SUITE"); s {
	case "", "1":
		o.Suite = true
	case "0":
		o.Suite = false
	default:
		return fmt.Errorf("RBEE_BENCH_SUITE=%q: want 0 or 1", s)
	}
	return nil
}

func (o *Options) fill() {
	if o.Out == "" {
		o.Out = filepath.Join(o.Root, "docs", "BENCHMARKS.md")
	}
	if o.Runs <= 0 {
		o.Runs = 5
	}
	if o.FaultCycles <= 0 {
		o.FaultCycles = 5
	}
	if o.CaptureRounds == 0 {
		o.CaptureRounds = 2
	}
	if o.ToxicRounds == 0 {
		o.ToxicRounds = 5
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
}

// BuildCeiling builds xtask/cmd/rbee-bench-ceiling into build/bin.
func BuildCeiling(ctx context.Context, root string) (string, error) {
	out := filepath.Join(root, "build", "bin", "rbee-bench-ceiling")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./xtask/cmd/rbee-bench-ceiling")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build rbee-bench-ceiling: %v\n%s", err, b)
	}
	return out, nil
}

// Run measures everything (images and build/bin must exist: `mage setup`),
// prints the tables and writes the report.
func Run(ctx context.Context, o Options) (Report, error) {
	o.fill()
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.Stdout, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
	rep := Report{Machine: DescribeMachine(ctx)}
	logf("machine: %s, %d cores, load %s", rep.Machine.CPU, rep.Machine.Cores, rep.Machine.LoadAvg)

	composeBin, err := BuildComposeCLI(ctx, o.Root)
	if err != nil {
		return rep, err
	}
	ceiling, err := BuildCeiling(ctx, o.Root)
	if err != nil {
		return rep, err
	}

	var ups []BringUpResult
	for _, topo := range []integration.Topology{integration.Localhost, integration.MultiHive} {
		logf("bring-up %s: %d × harness and Compose CLI %s, interleaved", topo, o.Runs, ComposeVersion)
		r, err := BringUp(ctx, o.Root, composeBin, topo, o.Runs, logf)
		if err != nil {
			return rep, err
		}
		ups = append(ups, r)
	}

	logf("faults: %d block/restore cycles, hive-localhost → queen", o.FaultCycles)
	fr, err := Faults(ctx, o.Root, o.FaultCycles, logf)
	if err != nil {
		return rep, err
	}

	var toxHead []string
	var toxTable *Table
	if o.ToxicRounds > 0 {
		logf("toxics: %d rounds of direct / proxied / %v latency batches, queen → hive-localhost (RBEE_BENCH_TOXICS=0 skips them)", o.ToxicRounds, ToxicLatency)
		tr, err := Toxics(ctx, o.Root, o.ToxicRounds, 20, logf)
		if err != nil {
			return rep, err
		}
		h, t := ToxicTable(tr)
		toxHead, toxTable = h, &t
	}

	lo := o.Loopback
	lo.QueenBin = filepath.Join(o.Root, "build", "bin", "queen-rbee")
	lo.CeilingBin = ceiling
	lo.Logf = logf
	if lo.Dir, err = os.MkdirTemp("", "rbee-bench-"); err != nil {
		return rep, err
	}
	defer os.RemoveAll(lo.Dir)
	lr, err := RunLoopback(ctx, lo)
	if err != nil {
		return rep, err
	}

	var suite *SuiteRun
	if o.Suite {
		logf("whole Docker suite (RBEE_BENCH_SUITE=0 skips it)")
		s, err := RunSuite(ctx, o.Root, filepath.Join(o.Root, "test-results", "bench"), "bench-suite")
		if err != nil {
			return rep, err
		}
		suite = &s
	}

	var capHead string
	var capTable *Table
	if o.CaptureRounds > 0 {
		logf("capture overhead: %d × %s package with RBEE_CAPTURE=off and =on, interleaved (RBEE_BENCH_CAPTURE=0 skips it)", o.CaptureRounds, CapturePackage)
		cr, err := CaptureOverhead(ctx, o.Root, CapturePackage, o.CaptureRounds, logf)
		if err != nil {
			return rep, err
		}
		h, t := CaptureTable(cr)
		capHead, capTable = h, &t
	}

	lo.fill()
	rep.Headline, rep.Tables = Tables(ups, fr, lr, lo, suite)
	if toxTable != nil {
		rep.Headline = append(rep.Headline, toxHead...)
		rep.Tables = append(rep.Tables, *toxTable)
	}
	if capTable != nil {
		rep.Headline = append(rep.Headline, capHead)
		rep.Tables = append(rep.Tables, *capTable)
	}
	rep.Tables = append(rep.Tables, Table{Title: "Load average", Header: []string{"at start", "at end"},
		Rows: [][]string{{rep.Machine.LoadAvg, orUnknown(LoadNow())}}})
	for _, t := range rep.Tables {
		_ = t.Text(o.Stdout)
	}
	fmt.Fprintln(o.Stdout)
	for _, h := range rep.Headline {
		fmt.Fprintln(o.Stdout, h)
	}
	if err := WriteBench(o.Out, rep); err != nil {
		return rep, err
	}
	fmt.Fprintf(o.Stdout, "\nwritten to %s\n", o.Out)
	return rep, nil
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// Tables turns the measurements into the report's headline and tables.
func Tables(ups []BringUpResult, fr FaultResult, lr LoopbackResult, lo LoopbackOptions, suite *SuiteRun) ([]string, []Table) {
	var head []string
	var phaseTables []Table
	up := Table{Title: "Topology bring-up to all healthy (images built)",
		Header: []string{"topology", "tool", "runs", "median", "min–max", "IQR", "harness / CLI (median)"},
		Notes: []string{
			"harness: integration.New → every service healthy by the harness's own checks (GET /health on each published HTTP port answering < 500 and the SSH banner on 22, polled every 50 ms; the image's HEALTHCHECK command, run by the harness via exec, only where a port is silent); Docker's health probes are disabled in harness stacks (dockerd 20.10 panics when a probe exec races a removal)",
			"CLI: `docker compose -p <unique> -f tests/docker/docker-compose.<topology>.yml up --wait`, the Compose CLI built from github.com/docker/compose/v5 " + ComposeVersion + " (the module version the harness links); waits for Docker's health status, i.e. the images' HEALTHCHECKs (interval 1 s, so at least one interval per service)",
			"raw-SDK floor (localhost): compose file loaded and client connected before the clock; network create, create + start every container in parallel with the same images, binds, environment and addresses, until every published HTTP port first answers GET /health; interleaved with the other two",
			"both: own project name, own /24 (harness 172.28.0.0/14, CLI 10.200.0.0/13 via RBEE_SUBNET and RBEE_*_IP), ephemeral 127.0.0.1 ports (RBEE_PUBLISH_*=0 for the CLI); runs interleaved harness, CLI, harness, CLI …; times include process/SDK start (CLI: the binary's start)",
		}}
	down := Table{Title: "Teardown and per-test overhead",
		Header: []string{"topology", "harness Close (median, min–max)", "CLI down -v (median, min–max)", "harness New+Close per test (median)"},
		Notes:  []string{"Close: heal faults, kill then remove containers (kill first: the same dockerd race), networks, volumes, sweep by label; down -v: stop (SIGTERM, tini forwards it), remove containers, networks, volumes"}}
	for _, r := range ups {
		h, c := Summarize(Seconds(r.HarnessUp)), Summarize(Seconds(r.CLIUp))
		ratio := Ratio(h.Median, c.Median)
		up.Add(r.Topology, "harness", strconv.Itoa(h.N), Secs(h.Median), Spread(h), IQR(h), Times(ratio))
		up.Add(r.Topology, "compose CLI", strconv.Itoa(c.N), Secs(c.Median), Spread(c), IQR(c), "")
		if len(r.FloorUp) > 0 {
			f := Summarize(Seconds(r.FloorUp))
			fratio := Ratio(h.Median, f.Median)
			up.Add(r.Topology, "raw-SDK floor", strconv.Itoa(f.N), Secs(f.Median), Spread(f), IQR(f), "harness / floor "+Times(fratio))
			head = append(head, fmt.Sprintf("bring-up %s: harness %s vs raw-SDK floor %s median = %s (target ≤ 1.80×, and ≤ 0.80 s): %s",
				r.Topology, Secs(h.Median), Secs(f.Median), Times(fratio), verdict(fratio <= 1.8 && h.Median <= 0.8)))
		}
		if len(r.PhaseOrder) > 0 {
			pt := Table{Title: "Harness phases, " + r.Topology + " (median of " + strconv.Itoa(h.N) + " runs)", Header: []string{"phase", "median", "min–max"},
				Notes: []string{"integration.Harness.Phases: connect (Docker CLI + ping + compose service), reap (labelled leftovers of dead owners), load (compose-go), images (inspect), network (pick a free /24, create), create (compose create + discover), start+ready (start every container, poll until healthy), close (all of Close)"}}
			for _, name := range r.PhaseOrder {
				st := Summarize(Seconds(r.Phases[name]))
				pt.Add(name, Secs(st.Median), Spread(st))
			}
			phaseTables = append(phaseTables, pt)
		}
		hc, cd := Summarize(Seconds(r.HarnessClose)), Summarize(Seconds(r.CLIDown))
		per := make([]float64, len(r.HarnessUp))
		for i := range per {
			per[i] = (r.HarnessUp[i] + r.HarnessClose[i]).Seconds()
		}
		down.Add(r.Topology, Secs(hc.Median)+" ("+Spread(hc)+")", Secs(cd.Median)+" ("+Spread(cd)+")", Secs(Summarize(per).Median))
		if len(r.FloorDown) > 0 {
			fd := Summarize(Seconds(r.FloorDown))
			down.Add(r.Topology+" raw-SDK floor", "remove -f, network rm: "+Secs(fd.Median)+" ("+Spread(fd)+")", "", "")
		}
		head = append(head, fmt.Sprintf("per-test New+Close %s: %s (target ≤ 1.00 s): %s; teardown %s (target ≤ 0.35 s): %s",
			r.Topology, Secs(Summarize(per).Median), verdict(Summarize(per).Median <= 1.0), Secs(hc.Median), verdict(hc.Median <= 0.35)))
		head = append(head, fmt.Sprintf("bring-up %s: harness %s vs compose CLI %s median = %s (target ≤ 0.80×): %s",
			r.Topology, Secs(h.Median), Secs(c.Median), Times(ratio), verdict(ratio <= 0.8)))
	}

	ft := Table{Title: "Fault injection (hive-localhost → queen, Localhost harness)",
		Header: []string{"measure", "runs", "median", "min–max"},
		Notes: []string{
			fmt.Sprintf("probe: inside hive-localhost a `curl -m 0.3 http://queen:8500/health` starts every %v (each in the background); an effect's time is the start of the first probe of the new state relative to the call's return, so the resolution is one probe interval; ≤ 0 means the rules were already in effect when the call returned", fr.ProbeEvery),
			"the first block of a harness also creates its fault-helper container (a container sharing the target's network namespace); the call times include that in run 1",
		}}
	addDur := func(name string, ds []time.Duration) {
		st := Summarize(Seconds(ds))
		ft.Add(name, strconv.Itoa(st.N), Secs(st.Median), Spread(st))
	}
	addDur("Inject(Block) call", fr.BlockCall)
	addDur("Inject(Block) returned → traffic dropped", fr.BlockEffect)
	addDur("Recover(Block) call", fr.RestoreCall)
	addDur("Recover(Block) returned → traffic flowing", fr.RestoreEffect)

	qs, cs := Summarize(lr.QueenRates), Summarize(lr.CeilingRates)
	ing := Ratio(qs.Median, cs.Median)
	fe := Summarize(lr.FirstEvent)
	rd := lr.Readers
	lt := Table{Title: "System under test on loopback (no Docker)",
		Header: []string{"measure", "value", "how"},
		Notes: []string{
			"both servers are separate processes on 127.0.0.1, started by the bench; the load generator runs in the bench process on the same cores, so on a 2-core machine it competes with the server and both rates are bounded by it: the ratio, not the absolute rate, is the finding",
		}}
	lt.Add("heartbeat ingest, queen-rbee (authentication on)", Rate(qs.Median)+" (range "+Rate(qs.Min)+"–"+Rate(qs.Max)+")",
		fmt.Sprintf("POST /v1/worker-heartbeat, 1000 distinct workers, each heartbeat freshly timestamped and HMAC-signed; the queen checks signature, window, order and binding; %d keep-alive connections, %d rounds of %v, median; %d errors", lo.Conns, lo.Rounds, lo.Duration, lr.QueenErrors))
	lt.Add("heartbeat ingest, bare net/http ceiling", Rate(cs.Median)+" (range "+Rate(cs.Min)+"–"+Rate(cs.Max)+")",
		fmt.Sprintf("xtask/cmd/rbee-bench-ceiling: same Content-Type check, body limit, strict decode of the same JSON, same answer, no authentication; the same signed requests; rounds alternated with the queen's; %d errors", lr.CeilingErrors))
	lt.Add("ingest queen / ceiling", Times(ing), "target ≥ 0.80×")
	lt.Add("submit → first event p50", Secs(fe.Median), fmt.Sprintf("%d sequential `status` jobs (result emitted at once): POST /v1/jobs, open the stream, first event; after 20 warm-up jobs", fe.N))
	lt.Add("submit → first event p99", Secs(fe.P99), fmt.Sprintf("min %s, max %s", Secs(fe.Min), Secs(fe.Max)))
	lt.Add(fmt.Sprintf("%d stream readers: queen RSS", rd.N), fmt.Sprintf("%s idle → %s (+%.1f KiB/reader)", MiB(rd.RSSIdle), MiB(rd.RSSReaders), (rd.RSSReaders-rd.RSSIdle)/1024/math.Max(1, float64(rd.N))),
		fmt.Sprintf("one infer job relayed from a fake worker (%d tokens, half, then held until every reader has them); RSS sampled with every reader connected", rd.EventsPerReader))
	lt.Add(fmt.Sprintf("%d stream readers: queen CPU", rd.N), fmt.Sprintf("%s CPU over %s wall", Dur(rd.CPU), Dur(rd.Wall)),
		fmt.Sprintf("utime+stime of the queen process from submit until every reader saw [DONE] (%d × %d events); all connected after %s", rd.N, rd.EventsPerReader, Dur(rd.ConnectWall)))
	head = append(head, fmt.Sprintf("heartbeat ingest: queen with authentication %s vs bare net/http %s = %s (target ≥ 0.80×): %s", Rate(qs.Median), Rate(cs.Median), Times(ing), verdict(ing >= 0.8)))

	tables := append([]Table{up, down}, phaseTables...)
	tables = append(tables, ft, lt)
	st := Table{Title: "Whole Docker suite", Header: []string{"measure", "value"}}
	if suite != nil {
		failed := 0
		for _, o := range suite.Outcomes {
			if o.Failed {
				failed++
			}
		}
		st.Add("wall time (`go tool gotestsum -- -tags docker -p 1` over every category, as `mage test:docker`)", Dur(suite.Wall))
		st.Add("top-level tests run / failed", fmt.Sprintf("%d / %d", len(suite.Outcomes), failed))
		st.Add("leftovers after the run", suite.Leftovers.String())
		head = append(head, fmt.Sprintf("whole Docker suite: %s, %d tests, %d failed; leftovers %s", Dur(suite.Wall), len(suite.Outcomes), failed, suite.Leftovers))
	} else {
		st.Add("wall time", "not measured in this run (RBEE_BENCH_SUITE=0)")
	}
	tables = append(tables, st)
	return head, tables
}
