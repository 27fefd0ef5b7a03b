package queen

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rbee-dev/rbee/internal/config"
)

// checkPublicURL refuses a loopback public_url when a hive is on another
// host: hives and workers are told this URL and would send their
// heartbeats to themselves (PROTOCOL.md: what tells another host how to
// reach a program is never localhost). A cluster that is all on one
// machine may use loopback.
func checkPublicURL(publicURL string, hives []config.Hive) error {
	if !config.IsLoopbackURL(publicURL) {
		return nil
	}
	for _, h := range hives {
		if !config.IsLoopbackHost(h.Hostname) {
			return fmt.Errorf("queen: public_url %q is a loopback address, but hive %q is on host %q, which cannot reach it; use an address the hives can reach", publicURL, h.Alias, h.Hostname)
		}
	}
	return nil
}

// DeadlineError ends a job that ran past its total deadline.
type DeadlineError struct {
	What  string // "infer" or "forwarded <op>"
	After time.Duration
	Key   string // the queen.toml key that sets it
}

func (e *DeadlineError) Error() string {
	return fmt.Sprintf("%s did not finish within %s (%s)", e.What, e.After, e.Key)
}

// withDeadline runs fn under a total deadline d, so that a peer that keeps
// a stream alive with keepalives (which reset only the idle cut) cannot
// keep a job running forever. When the deadline, not the job's own cancel,
// ended fn, the job fails with a DeadlineError instead of [CANCELLED].
func withDeadline(ctx context.Context, d time.Duration, what, key string, fn func(context.Context) error) error {
	dctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err := fn(dctx)
	if ctx.Err() == nil && errors.Is(dctx.Err(), context.DeadlineExceeded) {
		return &DeadlineError{What: what, After: d, Key: key}
	}
	return err
}

func (s *Server) inferTimeout() time.Duration {
	if d := s.cfg.Limits.InferTimeout.D(); d > 0 {
		return d
	}
	return config.DefaultQueenLimits().InferTimeout.D()
}

func (s *Server) forwardTimeout() time.Duration {
	if d := s.cfg.Limits.ForwardTimeout.D(); d > 0 {
		return d
	}
	return config.DefaultQueenLimits().ForwardTimeout.D()
}

// errTooManyTokens stops relaying a worker that sends more token events
// than the request's max_tokens.
var errTooManyTokens = errors.New("too many tokens")
