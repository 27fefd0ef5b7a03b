package nemesis

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
)

// Check holds the History of a run against the server, after the heal:
// every acknowledged job reached exactly one terminator, its status agrees,
// nothing is lost, whether it was acknowledged before, during or after a
// fault (checks.History.Violations); and every submission was acknowledged
// (the queen is never a target, so it must accept every job). Each
// violation names the faults that overlapped the job, for reading it
// against the schedule.
func Check(ctx context.Context, q *client.Client, hist *checks.History, jobs []Job, s Schedule) []string {
	var out []string
	byID := map[string]Job{}
	for _, j := range jobs {
		if !j.Acknowledged() {
			out = append(out, fmt.Sprintf("%s: not acknowledged (the queen is never faulted): %v%s", j, j.Err, overlapping(s, j.Submitted, j.Ended)))
			continue
		}
		byID[j.JobID] = j
	}
	for _, v := range hist.Violations(ctx, q) {
		ctxt := ""
		if j, ok := byID[v.JobID]; ok {
			ctxt = fmt.Sprintf(" [acknowledged %s, client done %s%s]", offset(j.Acked), offset(j.Ended), overlapping(s, j.Acked, j.Ended))
		}
		out = append(out, v.What+ctxt)
	}
	return out
}

// overlapping names the faults of s active at some time in [from, to].
func overlapping(s Schedule, from, to time.Duration) string {
	var fs []string
	for _, e := range s.Events {
		if e.At <= to && e.Heal() >= from {
			fs = append(fs, fmt.Sprintf("%s %s–%s", e.Fault(), offset(e.At), offset(e.Heal())))
		}
	}
	if len(fs) == 0 {
		return "; no fault meanwhile"
	}
	return "; faults meanwhile: " + strings.Join(fs, ", ")
}
