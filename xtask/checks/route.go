package checks

import (
	"fmt"
	"regexp"

	"github.com/rbee-dev/rbee/internal/client"
)

// Route is where the queen sent an infer job: the worker and its hive.
type Route struct {
	WorkerID string
	Hive     string
}

// routing matches the queen's schedule narration (docs/PROTOCOL.md,
// "Extra events"): "routing inference for M to worker W on H (n in flight)".
var routing = regexp.MustCompile(`^routing inference for \S+ to worker (\S+) on (\S+) \(`)

// Routes reads, from an infer job's events, every worker the queen routed
// it to, in order: more than one when the first refused and the queen
// tried another. Each narration's hive field must agree with the hive
// named in its message.
func Routes(o client.Outcome) ([]Route, error) {
	ns, err := client.Narrations(o)
	if err != nil {
		return nil, fmt.Errorf("job %s: %w", o.JobID, err)
	}
	var rs []Route
	for _, n := range ns {
		if n.Actor != "queen" || n.Action != "schedule" {
			continue
		}
		m := routing.FindStringSubmatch(n.Message)
		if m == nil {
			continue // "…; trying another worker"
		}
		if n.Hive != m[2] {
			return nil, fmt.Errorf("job %s: schedule narration names hive %s but its hive field is %q", o.JobID, m[2], n.Hive)
		}
		rs = append(rs, Route{WorkerID: m[1], Hive: m[2]})
	}
	return rs, nil
}

// RoutedTo is the worker that served an infer job: the last of its Routes.
func RoutedTo(o client.Outcome) (Route, error) {
	rs, err := Routes(o)
	if err != nil {
		return Route{}, err
	}
	if len(rs) == 0 {
		return Route{}, fmt.Errorf("job %s: no schedule narration naming a worker among %d events", o.JobID, len(o.Events))
	}
	return rs[len(rs)-1], nil
}
