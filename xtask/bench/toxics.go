package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/xtask/integration"
)

// ToxicLatency is the latency the toxic accuracy rows request.
const ToxicLatency = 100 * time.Millisecond

// ToxicResult is the connection-level fault proxy measured on one Localhost
// harness: queen → hive-localhost HTTP round trips direct, through the
// proxy with no toxic (Interpose) and with a ToxicLatency toxic, in
// interleaved rounds, and the inject/recover calls that switch between
// them.
type ToxicResult struct {
	PerBatch                   int
	Direct, Proxied, Latency   []time.Duration // each request's time_total
	FirstInject                time.Duration   // the run's first Inject: creates the helper, starts the proxy
	Inject, Recover            []time.Duration // every later Inject / Recover call
	InForce, InForceOf         int             // latency batches whose first request paid the latency
	RecoveredFast, RecoveredOf int             // direct batches (after a recover) whose first request did not
}

// curlBatch times n sequential GET /health from the queen to url, each on
// a new connection (curl's time_total: connect to the end of the body).
func curlBatch(ctx context.Context, h *integration.Harness, url string, n int) ([]time.Duration, error) {
	script := fmt.Sprintf(`for i in $(seq %d); do curl -s -o /dev/null -m 20 -w '%%{time_total} %%{http_code}\n' %s || echo "fail $?"; done`, n, url)
	r, err := h.Exec(ctx, "queen", []string{"bash", "-c", script})
	if err != nil {
		return nil, err
	}
	var ds []time.Duration
	for _, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || f[1] != "200" {
			return nil, fmt.Errorf("request from the queen to %s: %q (stderr %q)", url, line, tail(r.Stderr, 3))
		}
		s, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("curl time %q: %w", f[0], err)
		}
		ds = append(ds, time.Duration(s*float64(time.Second)))
	}
	if len(ds) != n {
		return nil, fmt.Errorf("%d of %d requests from the queen to %s answered", len(ds), n, url)
	}
	return ds, nil
}

// Toxics runs rounds of: a batch direct, Inject(Interpose), a batch through
// the proxy, Inject(Latency), a batch with the latency, Recover both.
func Toxics(ctx context.Context, root string, rounds, perBatch int, logf func(string, ...any)) (ToxicResult, error) {
	res := ToxicResult{PerBatch: perBatch}
	h, err := integration.New(ctx, integration.Localhost, integration.WithName("bench-toxics"), integration.WithRepoDir(root))
	defer func() { _ = h.Close(context.WithoutCancel(ctx)) }()
	if err != nil {
		return res, err
	}
	ip, err := h.IP("hive-localhost")
	if err != nil {
		return res, err
	}
	url := "http://" + ip + ":9000/health"
	timed := func(f func() error) (time.Duration, error) {
		t0 := time.Now()
		err := f()
		return time.Since(t0), err
	}
	inject := func(f integration.Fault) error {
		d, err := timed(func() error { return h.Inject(ctx, f) })
		if err != nil {
			return err
		}
		if res.FirstInject == 0 {
			res.FirstInject = d
		} else {
			res.Inject = append(res.Inject, d)
		}
		return nil
	}
	recoverF := func(f integration.Fault) error {
		d, err := timed(func() error { return h.Recover(ctx, f) })
		res.Recover = append(res.Recover, d)
		return err
	}
	for i := range rounds {
		direct, err := curlBatch(ctx, h, url, perBatch)
		if err != nil {
			return res, err
		}
		if i > 0 {
			res.RecoveredOf++
			if direct[0] < ToxicLatency {
				res.RecoveredFast++
			}
		}
		if err := inject(integration.Interpose("queen", "hive-localhost")); err != nil {
			return res, err
		}
		proxied, err := curlBatch(ctx, h, url, perBatch)
		if err != nil {
			return res, err
		}
		if err := inject(integration.Latency("queen", "hive-localhost", ToxicLatency, 0)); err != nil {
			return res, err
		}
		slow, err := curlBatch(ctx, h, url, perBatch)
		if err != nil {
			return res, err
		}
		res.InForceOf++
		if slow[0] >= ToxicLatency {
			res.InForce++
		}
		if err := recoverF(integration.Latency("queen", "hive-localhost", ToxicLatency, 0)); err != nil {
			return res, err
		}
		if err := recoverF(integration.Interpose("queen", "hive-localhost")); err != nil {
			return res, err
		}
		res.Direct = append(res.Direct, direct...)
		res.Proxied = append(res.Proxied, proxied...)
		res.Latency = append(res.Latency, slow...)
		logf("  toxics round %d/%d: p50 direct %s, through the proxy %s, with %v latency %s",
			i+1, rounds, Dur(med(direct)), Dur(med(proxied)), ToxicLatency, Dur(med(slow)))
	}
	return res, nil
}

func med(ds []time.Duration) time.Duration {
	return time.Duration(Summarize(Seconds(ds)).Median * float64(time.Second))
}

// ToxicTable is the report's table of the proxy and its headline lines.
func ToxicTable(r ToxicResult) ([]string, Table) {
	d, p, l := Summarize(Seconds(r.Direct)), Summarize(Seconds(r.Proxied)), Summarize(Seconds(r.Latency))
	added := l.Median - d.Median
	overhead := p.Median - d.Median
	accuracy := added / ToxicLatency.Seconds()
	inj, rec := Summarize(Seconds(r.Inject)), Summarize(Seconds(r.Recover))
	t := Table{Title: "Connection-level faults (toxic proxy, queen → hive-localhost)",
		Header: []string{"measure", "n", "median", "min–max"},
		Notes: []string{
			fmt.Sprintf("each request is `curl -w %%{time_total}` from inside the queen to the hive's GET /health by IP, a new connection each; batches of %d direct, through rbee-toxic with no toxic (Interpose) and with a %v latency toxic, interleaved in rounds so a drifting load is spread over all three", r.PerBatch, ToxicLatency),
			"added = p50 with the toxic − p50 direct; overhead = p50 through the proxy − p50 direct",
			"calls: the run's first Inject creates the fault helper and starts the proxy in it; every call returns when the proxy has the new state on every live connection (the first request after it is the check)",
		}}
	t.Add("direct round trip", strconv.Itoa(d.N), Secs(d.Median), Spread(d))
	t.Add("through the proxy, no toxic", strconv.Itoa(p.N), Secs(p.Median), Spread(p))
	t.Add(fmt.Sprintf("with a %v latency toxic", ToxicLatency), strconv.Itoa(l.N), Secs(l.Median), Spread(l))
	t.Add("added over the proxy alone (p50 toxic − p50 proxied)", "", Secs(l.Median-p.Median), "")
	t.Add("Inject, first of the run (helper + proxy start)", "1", Dur(r.FirstInject), "")
	t.Add("Inject (Interpose, Latency), later calls", strconv.Itoa(inj.N), Secs(inj.Median), Spread(inj))
	t.Add("Recover (Latency, Interpose)", strconv.Itoa(rec.N), Secs(rec.Median), Spread(rec))
	t.Add("latency in force on Inject's return (first request ≥ latency)", fmt.Sprintf("%d/%d", r.InForce, r.InForceOf), "", "")
	t.Add("gone on Recover's return (first request < latency)", fmt.Sprintf("%d/%d", r.RecoveredFast, r.RecoveredOf), "", "")
	head := []string{
		fmt.Sprintf("toxic latency accuracy: requested %v, added %s at p50 = %.0f %% (target 90–110 %%): %s",
			ToxicLatency, Secs(added), 100*accuracy, verdict(accuracy >= 0.9 && accuracy <= 1.1)),
		fmt.Sprintf("toxic proxy overhead with no toxic: %s at p50 (target < 1 ms): %s", Secs(overhead), verdict(overhead < 0.001)),
		fmt.Sprintf("toxic inject / recover: median %s / %s, first inject %s (target median < 150 ms): %s",
			Secs(inj.Median), Secs(rec.Median), Dur(r.FirstInject), verdict(inj.Median < 0.150 && rec.Median < 0.150)),
	}
	return head, t
}
