// Package checks holds what the Docker suites observe about a running rbee
// system, read from its APIs (never from log lines): polling helpers that
// wait for a state with a deadline and say what they last saw, and a
// client-side job history that proves nothing was lost (each job reached
// exactly one terminator and the server's job status agrees).
//
// It imports only the wire types and the client, so the suites treat the
// system as a black box and can test any build that speaks PROTOCOL.md.
package checks

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
)

// PollInterval is how often Await re-checks its condition.
var PollInterval = 100 * time.Millisecond

// Await polls cond until it reports true, ctx ends, or timeout passes. cond
// returns a short description of what it saw; the error on timeout quotes
// the last one ("hive-1 is offline; want online").
func Await(ctx context.Context, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string, error)) (err error) {
	defer observeAwait(what, timeout)(&err)
	if timeout <= 0 {
		return fmt.Errorf("await %s: timeout must be positive, got %s", what, timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var lastSeen string
	var lastErr error
	for {
		ok, seen, err := cond(ctx)
		if err == nil && ok {
			return nil
		}
		if seen != "" {
			lastSeen = seen
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("await %s: not true within %s", what, timeout)
			if lastSeen != "" {
				msg += "; last seen: " + lastSeen
			}
			if lastErr != nil {
				msg += fmt.Sprintf("; last error: %v", lastErr)
			}
			return errors.New(msg)
		case <-time.After(PollInterval):
		}
	}
}

// Hive returns the queen's registry row for alias.
func Hive(ctx context.Context, q *client.Client, alias string) (api.HiveInfo, error) {
	hs, err := q.Hives(ctx)
	if err != nil {
		return api.HiveInfo{}, err
	}
	for _, h := range hs {
		if h.Alias == alias {
			return h, nil
		}
	}
	return api.HiveInfo{}, fmt.Errorf("hive %q is not in GET /v1/hives", alias)
}

// AwaitHiveState waits until the queen reports hive alias in state want.
func AwaitHiveState(ctx context.Context, q *client.Client, alias, want string, timeout time.Duration) error {
	return Await(ctx, timeout, fmt.Sprintf("hive %s %s", alias, want), func(ctx context.Context) (bool, string, error) {
		h, err := Hive(ctx, q, alias)
		if err != nil {
			return false, "", err
		}
		return h.State == want, fmt.Sprintf("%s is %s; want %s", alias, h.State, want), nil
	})
}

// Worker returns the queen's registry row for worker id.
func Worker(ctx context.Context, q *client.Client, id string) (api.WorkerInfo, bool, error) {
	ws, err := q.Workers(ctx)
	if err != nil {
		return api.WorkerInfo{}, false, err
	}
	for _, w := range ws {
		if w.WorkerID == id {
			return w, true, nil
		}
	}
	return api.WorkerInfo{}, false, nil
}

// AwaitWorker waits until worker id is registered with the queen and pred
// (if non-nil) holds for its row; it returns the row.
func AwaitWorker(ctx context.Context, q *client.Client, id string, timeout time.Duration, what string, pred func(api.WorkerInfo) bool) (api.WorkerInfo, error) {
	var got api.WorkerInfo
	err := Await(ctx, timeout, fmt.Sprintf("worker %s %s", id, what), func(ctx context.Context) (bool, string, error) {
		w, ok, err := Worker(ctx, q, id)
		if err != nil {
			return false, "", err
		}
		if !ok {
			return false, fmt.Sprintf("worker %s not registered", id), nil
		}
		got = w
		if pred != nil && !pred(w) {
			return false, fmt.Sprintf("worker %s: state %s stale %v last_seen %s", id, w.State, w.Stale, w.LastSeen.Format(time.RFC3339Nano)), nil
		}
		return true, "", nil
	})
	return got, err
}

// Fresh is a predicate for AwaitWorker: registered and not stale.
func Fresh(w api.WorkerInfo) bool { return !w.Stale }

// Stale is a predicate for AwaitWorker: registered and stale.
func Stale(w api.WorkerInfo) bool { return w.Stale }

// Result decodes the single "result" event of an outcome.
func Result[T any](o client.Outcome) (T, error) {
	var zero T
	rs, err := client.Results[T](o)
	if err != nil {
		return zero, err
	}
	if len(rs) != 1 {
		return zero, fmt.Errorf("job %s had %d result events, want 1 (ended %s)", o.JobID, len(rs), o.Terminator())
	}
	return rs[0], nil
}

// EndedDone passes on a run's outcome and error, and turns an outcome
// that did not end [DONE] into an error naming the job and its terminator.
func EndedDone(o client.Outcome, err error) (client.Outcome, error) {
	if err != nil {
		return o, err
	}
	if o.Kind.String() != api.TermDone {
		return o, fmt.Errorf("job %s ended %s", o.JobID, o.Terminator())
	}
	return o, nil
}
