package checks

import (
	"encoding/json"
	"fmt"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
)

// Routes reads every worker an infer job's queen narration says it routed
// the job to, in order: one per attempt, the last the one that served (or
// failed). RoutedTo is its last element.
func Routes(o client.Outcome) ([]Route, error) {
	var rs []Route
	for _, ev := range o.Events {
		if ev.Name != api.EventNarration {
			continue
		}
		var n api.Narration
		if err := json.Unmarshal([]byte(ev.Data), &n); err != nil {
			return nil, fmt.Errorf("job %s: narration %d: %v", o.JobID, ev.ID, err)
		}
		if n.Actor != "queen" || n.Action != "schedule" {
			continue
		}
		if m := routing.FindStringSubmatch(n.Message); m != nil {
			rs = append(rs, Route{WorkerID: m[1], Hive: m[2]})
		}
	}
	return rs, nil
}
