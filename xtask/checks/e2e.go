package checks

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
)

// Adopt records a job that something other than Run submitted (a CLI the
// test ran, for example): it follows the job's stream from the first event,
// as Run does after submitting, and records what it saw, so that
// CheckNothingLost covers it too.
func (h *History) Adopt(ctx context.Context, q *client.Client, op, jobID string) (client.Outcome, error) {
	out, err := q.Follow(ctx, jobID, 0, nil)
	h.add(Entry{Op: op, JobID: jobID, Outcome: out, Err: err, Accepted: true})
	return out, err
}

// Route is where the queen sent an infer job: the worker and its hive.
type Route struct {
	WorkerID string
	Hive     string
}

// routing matches the queen's schedule narration (docs/PROTOCOL.md,
// "Extra events"): "routing inference for M to worker W on H (n in flight)".
var routing = regexp.MustCompile(`^routing inference for \S+ to worker (\S+) on (\S+) \(`)

// RoutedTo reads, from an infer job's events, the worker the queen routed
// it to. When the queen tried more than one worker (the first refused),
// the last one is the one that served. The narration's hive field must
// agree with the hive named in its message.
func RoutedTo(o client.Outcome) (Route, error) {
	var r Route
	for _, ev := range o.Events {
		if ev.Name != api.EventNarration {
			continue
		}
		var n api.Narration
		if err := json.Unmarshal([]byte(ev.Data), &n); err != nil {
			return Route{}, fmt.Errorf("job %s: narration %d: %v", o.JobID, ev.ID, err)
		}
		if n.Actor != "queen" || n.Action != "schedule" {
			continue
		}
		m := routing.FindStringSubmatch(n.Message)
		if m == nil {
			continue // "…; trying another worker"
		}
		if n.Hive != m[2] {
			return Route{}, fmt.Errorf("job %s: schedule narration names hive %s but its hive field is %q", o.JobID, m[2], n.Hive)
		}
		r = Route{WorkerID: m[1], Hive: m[2]}
	}
	if r.WorkerID == "" {
		return Route{}, fmt.Errorf("job %s: no schedule narration naming a worker among %d events", o.JobID, len(o.Events))
	}
	return r, nil
}
