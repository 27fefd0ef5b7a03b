package suite

import (
	"context"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/modelhub"
)

// Models the full stack's hub serves and its standalone workers load
// (modelhub.DefaultSpecs).
const (
	TinyModel   = modelhub.TinyNgram // order 3, about 21 KiB
	Ngram4Model = modelhub.Ngram4    // order 4, about 46 KiB
	BigModel    = modelhub.BigNgram  // 8 MiB: a download long enough to act during
)

// JobTimeout bounds one job through the queen, submit to terminator, for
// the helpers below: generous, because the suites share two cores; it is
// not an assertion about speed.
const JobTimeout = 2 * time.Minute

// Download runs model_download of model onto hive through hist and returns
// the catalog entry the hive reports.
func Download(t testing.TB, q *client.Client, hist *checks.History, hive, model string) api.Model {
	t.Helper()
	return Result[api.Model](t, JobTimeout, q, hist, api.JobRequest{Operation: api.OpModelDownload, HiveID: hive, Model: model})
}

// Spawn runs worker_spawn of model on hive's device through hist and
// returns the hive's result, without waiting for the worker's heartbeat
// (SpawnWorker does).
func Spawn(t testing.TB, q *client.Client, hist *checks.History, hive, model, device string) api.WorkerProcess {
	t.Helper()
	return Result[api.WorkerProcess](t, JobTimeout, q, hist, api.JobRequest{Operation: api.OpWorkerSpawn, HiveID: hive, Model: model, Device: device})
}

// ProcessList runs worker_process_list on hive through hist: the hive's
// own table of the workers it spawned.
func ProcessList(t testing.TB, q *client.Client, hist *checks.History, hive string) []api.WorkerProcess {
	t.Helper()
	return Result[api.WorkerList](t, JobTimeout, q, hist, api.JobRequest{Operation: api.OpWorkerProcessList, HiveID: hive}).Workers
}

// Follow submits req through hist (a refused submission fails the test)
// and follows the job to its end within ctx, calling onEvent (if non-nil)
// for each event as it arrives; the job is recorded in hist, so
// CheckNothingLost covers it. It returns what the client saw, for tests
// that judge a failed follow themselves.
func Follow(ctx context.Context, t testing.TB, q *client.Client, hist *checks.History, req api.JobRequest, onEvent func(sse.Event) error) (client.Outcome, error) {
	t.Helper()
	acc, err := hist.Submit(ctx, q, req)
	if err != nil {
		t.Fatalf("submit %s: %v", describe(req), err)
	}
	return hist.Adopt(ctx, q, req.Operation, acc.JobID, onEvent)
}

// Followed is how following a background job ended.
type Followed struct {
	Out client.Outcome
	Err error
	At  time.Time // when the follow ended
}

// Submit submits req through hist (a refused submission fails the test)
// and follows the job on its own goroutine until ctx ends, calling onEvent
// (if non-nil) for each event; the job is recorded in hist when the follow
// ends, so CheckNothingLost covers it. It is for tests that act while a job
// runs: they read the channel, which gets one value, when they need the
// end.
func Submit(ctx context.Context, t testing.TB, q *client.Client, hist *checks.History, req api.JobRequest, onEvent func(sse.Event) error) (api.JobAccepted, <-chan Followed) {
	t.Helper()
	acc, err := hist.Submit(ctx, q, req)
	if err != nil {
		t.Fatalf("submit %s: %v", describe(req), err)
	}
	done := make(chan Followed, 1)
	go func() {
		out, err := hist.Adopt(ctx, q, req.Operation, acc.JobID, onEvent)
		done <- Followed{out, err, time.Now()}
	}()
	return acc, done
}

// Ended waits at most timeout for a job Submit follows in the background
// to end, and returns what the client saw; a follow error, or no end in
// time (what names the wait), fails the test.
func Ended(t testing.TB, done <-chan Followed, timeout time.Duration, what string) client.Outcome {
	t.Helper()
	select {
	case r := <-done:
		if r.Err != nil {
			t.Fatalf("%s: following job %s: %v", what, r.Out.JobID, r.Err)
		}
		return r.Out
	case <-time.After(timeout):
		t.Fatalf("%s: the job did not end within %v", what, timeout)
	}
	panic("unreachable")
}

// RoutedWorkers lists the workers the queen's narration says it routed
// infer job o to, in order (checks.Routes): one, unless a worker refused
// and the queen tried another.
func RoutedWorkers(t testing.TB, o client.Outcome) []string {
	t.Helper()
	rs, err := checks.Routes(o)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.WorkerID
	}
	return ids
}

// Narrations decodes o's narration events (client.Narrations); one that is
// not JSON fails the test.
func Narrations(t testing.TB, o client.Outcome) []api.Narration {
	t.Helper()
	ns, err := client.Narrations(o)
	if err != nil {
		t.Fatalf("job %s: %v", o.JobID, err)
	}
	return ns
}
