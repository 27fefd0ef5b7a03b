package checks

import (
	"encoding/json"
	"fmt"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
)

// Routes reads every worker an infer job's queen narration says it routed
// the job to, in order: one per attempt, the last the one that served (or
// failed): RoutedTo is its last element.
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
