package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
)

// LoopbackOptions size the benchmarks of the system under test on loopback.
// Zero values take the defaults in brackets.
type LoopbackOptions struct {
	QueenBin   string        // a queen-rbee binary (build/bin/queen-rbee)
	CeilingBin string        // rbee-bench-ceiling
	Dir        string        // for configs and logs
	Conns      int           // load generator connections [32]
	Duration   time.Duration // per ingest round [3s]
	Rounds     int           // ingest rounds per server, alternated [3]
	Submits    int           // submit → first event samples [300]
	Readers    int           // concurrent stream readers [1000]
	Logf       func(format string, args ...any)
}

func (o *LoopbackOptions) fill() {
	if o.Conns <= 0 {
		o.Conns = 32
	}
	if o.Duration <= 0 {
		o.Duration = 3 * time.Second
	}
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.Submits <= 0 {
		o.Submits = 300
	}
	if o.Readers <= 0 {
		o.Readers = 1000
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// LoopbackResult is what the loopback benchmarks measured.
type LoopbackResult struct {
	QueenRates, CeilingRates   []float64 // heartbeats answered 200 per second, per round
	QueenErrors, CeilingErrors int64     // non-200 answers or transport errors, all rounds
	FirstEvent                 []float64 // submit → first event, seconds
	Readers                    ReadersResult
}

// ReadersResult is the 1 000-readers fan-out: one inference job relayed by
// the queen from a fake worker, followed by every reader.
type ReadersResult struct {
	N                   int
	EventsPerReader     int
	RSSIdle, RSSReaders float64       // queen RSS before the job, and with every reader connected
	CPU                 time.Duration // queen CPU time from submit until every reader saw [DONE]
	Wall                time.Duration // same interval, wall clock
	ConnectWall         time.Duration // submit until every reader had the first half of the events
}

// RunLoopback runs the three loopback benchmarks, each on a fresh queen.
func RunLoopback(ctx context.Context, o LoopbackOptions) (LoopbackResult, error) {
	o.fill()
	var r LoopbackResult
	var err error
	o.Logf("loopback: heartbeat ingest, %d connections, %d × %v per server, alternated", o.Conns, o.Rounds, o.Duration)
	if r.QueenRates, r.CeilingRates, r.QueenErrors, r.CeilingErrors, err = ingest(ctx, o); err != nil {
		return r, err
	}
	o.Logf("loopback: submit → first event, %d samples", o.Submits)
	if r.FirstEvent, err = firstEvent(ctx, o); err != nil {
		return r, err
	}
	o.Logf("loopback: %d stream readers", o.Readers)
	if r.Readers, err = readers(ctx, o); err != nil {
		return r, err
	}
	return r, nil
}

// benchWorkers is how many distinct workers the ingest benchmark's
// heartbeats come from, as in internal/queen's BenchmarkWorkerHeartbeat: the
// registry sees updates to known workers, the steady state of a real cluster.
const benchWorkers = 1000

func ingest(ctx context.Context, o LoopbackOptions) (q, c []float64, qerr, cerr int64, err error) {
	queen, err := startQueen(ctx, o.Dir, "queen-ingest", o.QueenBin)
	if err != nil {
		return nil, nil, 0, 0, err
	}
	defer queen.stop()
	ceil, err := startCeiling(ctx, o.Dir, o.CeilingBin)
	if err != nil {
		return nil, nil, 0, 0, err
	}
	defer ceil.stop()
	key, err := benchKey(o.Dir)
	if err != nil {
		return nil, nil, 0, 0, err
	}
	// Warm both up (connections, registry filled with the 1000 workers).
	for _, u := range []string{queen.url, ceil.url} {
		if _, _, _, err := hammer(ctx, u, key, o.Conns, 500*time.Millisecond); err != nil {
			return nil, nil, 0, 0, err
		}
	}
	for i := 0; i < o.Rounds; i++ {
		ok, bad, el, err := hammer(ctx, queen.url, key, o.Conns, o.Duration)
		if err != nil {
			return nil, nil, 0, 0, err
		}
		q, qerr = append(q, float64(ok)/el.Seconds()), qerr+bad
		ok, bad, el, err = hammer(ctx, ceil.url, key, o.Conns, o.Duration)
		if err != nil {
			return nil, nil, 0, 0, err
		}
		c, cerr = append(c, float64(ok)/el.Seconds()), cerr+bad
		o.Logf("  round %d: queen (authentication on) %s, ceiling %s", i+1, Rate(q[i]), Rate(c[i]))
	}
	return q, c, qerr, cerr, ctx.Err()
}

// hammer posts heartbeats from conns goroutines over keep-alive connections
// for d, and returns the count of 200 answers, of failures, and the time
// it took. Each heartbeat is what a worker sends: a fresh timestamp,
// marshalled and signed with the cluster secret in keyFile (the ceiling
// ignores the signature; the generator's work is the same for both).
// Goroutine g sends for the workers whose number is g modulo conns, one at
// a time, so each worker's heartbeats arrive in order, as a real worker's do.
func hammer(ctx context.Context, base, keyFile string, conns int, d time.Duration) (ok, failed int64, elapsed time.Duration, err error) {
	sign, err := client.WithKeyFile(keyFile)
	if err != nil {
		return 0, 0, 0, err
	}
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	c := client.New(base, client.WithHTTPClient(&http.Client{Transport: tr, Timeout: 10 * time.Second}), sign)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var nOK, nBad atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < conns; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last time.Time
			own := (benchWorkers - g + conns - 1) / conns // workers g, g+conns, … below benchWorkers
			for k := 0; ctx.Err() == nil; k++ {
				now := time.Now().UTC()
				if !now.After(last) {
					now = last.Add(time.Microsecond)
				}
				last = now
				n := g + conns*(k%max(own, 1))
				hb := api.WorkerHeartbeat{WorkerID: fmt.Sprintf("w-%d", n), HiveID: "bench", Model: "org/repo:file",
					Device: "cpu:0", URL: "http://10.0.0.1:9100", State: "ready", Timestamp: now}
				err := c.Do(ctx, http.MethodPost, "/v1/worker-heartbeat", hb, nil)
				switch {
				case err == nil:
					nOK.Add(1)
				case ctx.Err() == nil:
					nBad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return nOK.Load(), nBad.Load(), time.Since(start), nil
}

var errFirst = errors.New("first event seen")

// firstEvent measures POST /v1/jobs {"operation":"status"} until the first
// event arrives on a new stream connection: the status op emits its result
// at once, so this is the job API's own overhead (submit, job start, stream
// open, first event), not an operation's.
func firstEvent(ctx context.Context, o LoopbackOptions) ([]float64, error) {
	queen, err := startQueen(ctx, o.Dir, "queen-latency", o.QueenBin)
	if err != nil {
		return nil, err
	}
	defer queen.stop()
	c := client.New(queen.url, client.WithoutEventLog())
	one := func() (time.Duration, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		t0 := time.Now()
		acc, err := c.Submit(ctx, api.JobRequest{Operation: api.OpStatus})
		if err != nil {
			return 0, err
		}
		if _, err := c.Follow(ctx, acc.JobID, 0, func(sse.Event) error { return errFirst }); !errors.Is(err, errFirst) {
			return 0, fmt.Errorf("follow %s: got %v before any event", acc.JobID, err)
		}
		return time.Since(t0), nil
	}
	for i := 0; i < 20; i++ { // warm-up
		if _, err := one(); err != nil {
			return nil, err
		}
	}
	out := make([]float64, 0, o.Submits)
	for i := 0; i < o.Submits; i++ {
		d, err := one()
		if err != nil {
			return nil, err
		}
		out = append(out, d.Seconds())
	}
	return out, nil
}

// fakeWorker serves PROTOCOL §5's inference endpoints for one job: half the
// tokens, then it waits for release, then the rest, an end event and [DONE].
// It stands in for llm-worker-rbee so the readers benchmark measures the
// queen's fan-out, not token generation.
type fakeWorker struct {
	srv     *httptest.Server
	tokens  int
	release chan struct{}
}

func newFakeWorker(tokens int) *fakeWorker {
	w := &fakeWorker{tokens: tokens, release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(rw http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(rw).Encode(map[string]string{"status": "ready", "worker_id": "bench-worker"})
	})
	mux.HandleFunc("POST /v1/inference", func(rw http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		rw.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(rw).Encode(api.JobAccepted{JobID: "inf-1", SSEURL: "/v1/inference/inf-1/stream"})
	})
	mux.HandleFunc("GET /v1/inference/{id}/stream", w.stream)
	mux.HandleFunc("DELETE /v1/inference/{id}", func(rw http.ResponseWriter, r *http.Request) {})
	w.srv = httptest.NewServer(mux)
	return w
}

func (w *fakeWorker) stream(rw http.ResponseWriter, r *http.Request) {
	fl, _ := rw.(http.Flusher)
	rw.Header().Set("Content-Type", "text/event-stream")
	rw.WriteHeader(http.StatusOK)
	id := 0
	emit := func(name, data string) {
		id++
		fmt.Fprintf(rw, "id: %d\nevent: %s\ndata: %s\n\n", id, name, data)
		if fl != nil {
			fl.Flush()
		}
	}
	tok := func(i int) string { b, _ := json.Marshal(api.Token{T: "x", I: i}); return string(b) }
	for i := 0; i < w.tokens/2; i++ {
		emit(api.EventToken, tok(i))
	}
	select {
	case <-w.release:
	case <-r.Context().Done():
		return
	}
	for i := w.tokens / 2; i < w.tokens; i++ {
		emit(api.EventToken, tok(i))
	}
	emit("end", fmt.Sprintf(`{"tokens_out":%d,"stop_reason":"max_tokens"}`, w.tokens))
	fmt.Fprint(rw, "data: [DONE]\n\n")
	if fl != nil {
		fl.Flush()
	}
}

func readers(ctx context.Context, o LoopbackOptions) (ReadersResult, error) {
	const tokens = 100
	res := ReadersResult{N: o.Readers, EventsPerReader: tokens}
	queen, err := startQueen(ctx, o.Dir, "queen-readers", o.QueenBin)
	if err != nil {
		return res, err
	}
	defer queen.stop()
	fw := newFakeWorker(tokens)
	defer fw.srv.Close()
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(fw.release) }) }
	defer release()

	key, err := benchKey(o.Dir)
	if err != nil {
		return res, err
	}
	sign, err := client.WithKeyFile(key)
	if err != nil {
		return res, err
	}
	q := client.New(queen.url, sign)
	const model = "bench/fanout:model.bin"
	hb := api.WorkerHeartbeat{WorkerID: "bench-worker", HiveID: "bench", Model: model, Device: "cpu:0",
		URL: fw.srv.URL, State: "ready", Timestamp: time.Now().UTC()}
	if err := q.Do(ctx, http.MethodPost, "/v1/worker-heartbeat", hb, nil); err != nil {
		return res, fmt.Errorf("register fake worker: %w", err)
	}
	if res.RSSIdle, err = queen.rss(); err != nil {
		return res, err
	}
	cpu0, err := queen.cpu()
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	acc, err := q.Submit(ctx, api.JobRequest{Operation: api.OpInfer, Model: model, Prompt: "bench", MaxTokens: tokens})
	if err != nil {
		return res, err
	}
	tr := &http.Transport{MaxIdleConnsPerHost: o.Readers, Proxy: nil}
	defer tr.CloseIdleConnections()
	rc := client.New(queen.url, client.WithHTTPClient(&http.Client{Transport: tr}), client.WithStreamClient(&http.Client{Transport: tr}), client.WithoutEventLog())
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var half sync.WaitGroup
	half.Add(o.Readers)
	var wg sync.WaitGroup
	errs := make(chan error, o.Readers)
	for i := 0; i < o.Readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen, signalled := 0, false
			defer func() {
				if !signalled {
					half.Done()
				}
			}()
			out, err := rc.Follow(rctx, acc.JobID, 0, func(ev sse.Event) error {
				if ev.Name == api.EventToken {
					seen++
				}
				if !signalled && seen == tokens/2 {
					signalled = true
					half.Done()
				}
				return nil
			})
			if err != nil || out.Kind != sse.Done || seen != tokens {
				errs <- fmt.Errorf("reader: err %v, %s, %d of %d tokens", err, out.Terminator(), seen, tokens)
			}
		}()
	}
	halfDone := make(chan struct{})
	go func() { half.Wait(); close(halfDone) }()
	select {
	case <-halfDone:
	case <-rctx.Done():
		return res, fmt.Errorf("%d readers: not all connected within 2 min", o.Readers)
	}
	res.ConnectWall = time.Since(t0)
	if res.RSSReaders, err = queen.rss(); err != nil {
		return res, err
	}
	release()
	wg.Wait()
	res.Wall = time.Since(t0)
	cpu1, err := queen.cpu()
	if err != nil {
		return res, err
	}
	res.CPU = cpu1 - cpu0
	close(errs)
	var all []error
	for e := range errs {
		all = append(all, e)
	}
	if len(all) > 0 {
		return res, fmt.Errorf("%d of %d readers failed; first: %w", len(all), o.Readers, all[0])
	}
	return res, nil
}
