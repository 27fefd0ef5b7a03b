package checks

import (
	"context"
	"fmt"

	"github.com/rbee-dev/rbee/internal/client"
)

// Violation is one recorded job that breaks what CheckNothingLost checks,
// with what was wrong.
type Violation struct {
	JobID string
	What  string
}

func (v Violation) String() string { return v.What }

// Violations checks every accepted job as CheckNothingLost does (exactly
// one terminator, last, equal to what the client saw; status agreeing,
// with finished_at) and returns each problem separately, so a caller can
// count them and place them in time. A job id recorded twice is a
// violation too: the server handed out one id for two submissions, or the
// client followed one job as two.
func (h *History) Violations(ctx context.Context, q *client.Client) []Violation {
	var out []Violation
	seen := map[string]int{}
	for _, e := range h.Entries() {
		if !e.Accepted {
			continue
		}
		if seen[e.JobID]++; seen[e.JobID] == 2 {
			out = append(out, Violation{e.JobID, fmt.Sprintf("%s %s: recorded for two submissions", e.Op, e.JobID)})
			continue
		}
		if seen[e.JobID] > 2 {
			continue
		}
		if err := checkJob(ctx, q, e); err != nil {
			out = append(out, Violation{e.JobID, err.Error()})
		}
	}
	return out
}
