package queen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/jobs"
	"github.com/rbee-dev/rbee/internal/scheduler"
	"github.com/rbee-dev/rbee/internal/sse"
)

// isConnRefused reports whether the worker can never have seen the request:
// the connection was refused, or its host is gone or unreachable (a crashed
// machine), so another worker may be tried safely.
func isConnRefused(err error) bool { return neverConnected(err) }

// maxWorkerTries bounds how many workers one infer tries when the chosen
// one refuses connections (it died since its last heartbeat).
const maxWorkerTries = 3

// workerToken is the bearer token for worker w: the configured one, else
// the one derived from the cluster secret for w's hive, and only when w's
// URL is on its hive's host (the registry binds it there), so no token
// ever goes to an address a heartbeat merely claimed.
func (s *Server) workerToken(w api.WorkerInfo) string {
	if s.key == nil {
		return s.token // no authentication configured: the old behaviour
	}
	if !s.reg.WorkerHost(w) {
		return ""
	}
	if s.token != "" {
		return s.token
	}
	return s.key.WorkerToken(w.HiveID)
}

func (s *Server) workerClient(url, token string) *client.Client {
	opts := []client.Option{
		client.WithHTTPClient(s.http.short),
		client.WithStreamClient(s.http.stream),
		client.WithReconnects(s.http.retries),
		client.WithoutEventLog(),
		client.WithIdleTimeout(s.http.idleTimeout() + 5*time.Second),
	}
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	return client.New(url, opts...)
}

// infer schedules the request onto a worker and streams its tokens.
func (s *Server) infer(ctx context.Context, j *jobs.Job, req api.JobRequest) error {
	body := api.InferenceRequest{Prompt: req.Prompt, MaxTokens: req.MaxTokens, Temperature: DefaultTemperature, Stop: []string{}}
	if req.Temperature != nil {
		body.Temperature = *req.Temperature
	}
	if req.Seed != nil {
		body.Seed = *req.Seed
	}
	var tried []string
	var lastErr error
	for {
		w, release, err := s.sched.Pick(req.Model, req.HiveID, tried...)
		if err != nil {
			var nw *scheduler.NoWorkerError
			if errors.As(err, &nw) && lastErr != nil {
				return fmt.Errorf("%v; no other ready worker for model %s", lastErr, req.Model)
			}
			return err
		}
		retry, err := s.inferOn(ctx, j, w, body, release)
		if !retry || len(tried)+1 >= maxWorkerTries {
			return err
		}
		tried, lastErr = append(tried, w.WorkerID), err
		s.narrate(j, "schedule", w.HiveID, "%v; trying another worker", err)
	}
}

// inferOn runs one inference on worker w. retry reports that the worker
// never saw the request (it refused the connection), so another may be tried.
func (s *Server) inferOn(ctx context.Context, j *jobs.Job, w api.WorkerInfo, body api.InferenceRequest, release func()) (retry bool, err error) {
	defer release()
	name := fmt.Sprintf("worker %s (%s)", w.WorkerID, w.URL)
	s.narrate(j, "schedule", w.HiveID, "routing inference for %s to worker %s on %s (%d in flight)",
		w.Model, w.WorkerID, w.HiveID, s.sched.InFlight(w.WorkerID))
	ctx = withNarrator(ctx, s.narrator(j, w.HiveID))
	c := s.workerClient(w.URL, s.workerToken(w))
	var acc api.JobAccepted
	// Not cut short by a cancel, so an accepted generation is known and
	// can be stopped (see forward).
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.http.timeout*time.Duration(s.http.retries+2))
	err = c.Do(pctx, http.MethodPost, "/v1/inference", body, &acc)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return false, jobs.ErrCancelled
		}
		cause := describeErr(err, s.http.timeout)
		if mayHaveArrived(err) {
			cause += unanswered
		}
		return isConnRefused(err), fmt.Errorf("%s: %s", name, cause)
	}
	path := acc.SSEURL
	if path == "" {
		path = "/v1/inference/" + acc.JobID + "/stream"
	}
	if ctx.Err() != nil {
		s.cancelInference(c, w.WorkerID, strings.TrimSuffix(path, "/stream"))
		return false, jobs.ErrCancelled
	}
	tokens := 0
	out, err := c.FollowPath(ctx, path, acc.JobID, 0, func(ev sse.Event) error {
		// max_tokens is enforced here too: a worker that sends more is
		// cut off, and the extra token is not relayed.
		if ev.Name == api.EventToken {
			if tokens++; tokens > body.MaxTokens {
				return errTooManyTokens
			}
		}
		s.reemit(j, ev, w.HiveID)
		return nil
	})
	if ctx.Err() != nil {
		// The worker's job runs whether or not anybody reads it: only the
		// DELETE stops the generation. Sent synchronously (bounded) so a
		// shutting-down queen does not exit before it goes out.
		s.cancelInference(c, w.WorkerID, strings.TrimSuffix(path, "/stream"))
		return false, jobs.ErrCancelled
	}
	if errors.Is(err, errTooManyTokens) {
		s.cancelInference(c, w.WorkerID, strings.TrimSuffix(path, "/stream"))
		return false, fmt.Errorf("%s: sent more than max_tokens (%d) tokens; stopped", name, body.MaxTokens)
	}
	if err != nil {
		s.cancelInference(c, w.WorkerID, strings.TrimSuffix(path, "/stream"))
		return false, fmt.Errorf("%s: lost the inference stream: %s", name, followCause(err, s.http.timeout))
	}
	switch out.Kind {
	case sse.Done:
		return false, nil
	case sse.Cancelled:
		return false, jobs.ErrCancelled
	}
	return false, fmt.Errorf("%s: %s", name, out.Error)
}

func (s *Server) cancelInference(c *client.Client, worker, path string) {
	ctx, cancel := context.WithTimeout(context.Background(), min(s.http.timeout, 3*time.Second))
	defer cancel()
	_ = c.Do(ctx, http.MethodDelete, path, nil, nil)
}
