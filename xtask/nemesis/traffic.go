package nemesis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
)

// Job is one job the traffic generator submitted and what became of it,
// with times as offsets from the start of the run.
type Job struct {
	Client    int
	Op        string
	Hive      string // the hive it was pinned to, "" for any
	MaxTokens int
	JobID     string
	Submitted time.Duration
	Acked     time.Duration // when the queen answered the POST (0 if it did not)
	Ended     time.Duration
	Kind      sse.TermKind // how it ended, if it did
	Err       error        // submit or follow error
}

// Acknowledged reports whether the queen accepted the job.
func (j Job) Acknowledged() bool { return j.JobID != "" }

func (j Job) String() string {
	where := "any hive"
	if j.Hive != "" {
		where = j.Hive
	}
	return fmt.Sprintf("%s %s on %s (client %d, submitted %s)", j.Op, orNone(j.JobID), where, j.Client, offset(j.Submitted))
}

// Traffic is the job load run under a schedule: Clients concurrent
// clients, each submitting one job after another (a short random pause
// between them) until told to stop, every job recorded in the History.
type Traffic struct {
	Clients    int
	Model      string
	Hives      []string
	JobTimeout time.Duration // bound on one job, submit to terminator
}

// request draws the next job: mostly inferences (of 16 to 256 tokens, some
// pinned to a hive), and some operations the queen forwards to a hive.
func (tr Traffic) request(r *rand.Rand) api.JobRequest {
	pin := func() string { return tr.Hives[r.IntN(len(tr.Hives))] }
	seed := r.Uint64()
	tokens := []int{16, 64, 256}[r.IntN(3)]
	infer := api.JobRequest{Operation: api.OpInfer, Model: tr.Model, Prompt: "Alice was", MaxTokens: tokens, Seed: &seed}
	switch p := r.IntN(10); {
	case p < 5:
		return infer
	case p < 8:
		infer.HiveID = pin()
		return infer
	case p < 9:
		return api.JobRequest{Operation: api.OpWorkerProcessList, HiveID: pin()}
	default:
		return api.JobRequest{Operation: api.OpModelList, HiveID: pin()}
	}
}

// Run runs the load until stop is closed and every client's last job has
// ended; it returns every job. seed makes the mix of jobs repeatable (their
// timing is not: it depends on the system).
func (tr Traffic) Run(ctx context.Context, q *client.Client, hist *checks.History, seed uint64, start time.Time, stop <-chan struct{}) []Job {
	var mu sync.Mutex
	var all []Job
	var wg sync.WaitGroup
	for c := range tr.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(c)+1))
			for {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				j := tr.one(ctx, q, hist, r, c, start)
				mu.Lock()
				all = append(all, j)
				mu.Unlock()
				// Pacing, so that jobs failing fast against a faulted hive
				// do not turn into a flood.
				pause := time.NewTimer(time.Duration(50+r.IntN(250)) * time.Millisecond)
				select {
				case <-stop:
				case <-ctx.Done():
				case <-pause.C:
				}
				pause.Stop()
			}
		}()
	}
	wg.Wait()
	return all
}

func (tr Traffic) one(ctx context.Context, q *client.Client, hist *checks.History, r *rand.Rand, c int, start time.Time) Job {
	req := tr.request(r)
	j := Job{Client: c, Op: req.Operation, Hive: req.HiveID, MaxTokens: req.MaxTokens, Submitted: time.Since(start)}
	ctx, cancel := context.WithTimeout(ctx, tr.JobTimeout)
	defer cancel()
	acc, err := q.Submit(ctx, req)
	if err != nil {
		j.Err, j.Ended = fmt.Errorf("submit: %w", err), time.Since(start)
		return j
	}
	j.JobID, j.Acked = acc.JobID, time.Since(start)
	out, err := hist.Adopt(ctx, q, req.Operation, acc.JobID, nil)
	j.Ended, j.Kind, j.Err = time.Since(start), out.Kind, err
	return j
}
