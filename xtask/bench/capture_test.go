package bench

import (
	"strings"
	"testing"
	"time"
)

func TestCaptureTableVerdict(t *testing.T) {
	s := func(xs ...float64) []time.Duration {
		var ds []time.Duration
		for _, x := range xs {
			ds = append(ds, time.Duration(x*float64(time.Second)))
		}
		return ds
	}
	head, tab := CaptureTable(CaptureResult{Package: "heartbeat", Off: s(100, 110, 90), On: s(103, 104, 150)})
	if !strings.Contains(head, "+4.0 %") || !strings.HasSuffix(head, ": met") {
		t.Fatalf("headline %q", head)
	}
	if len(tab.Rows) != 3 || tab.Rows[2][2] != "+4.0 %" {
		t.Fatalf("rows %v", tab.Rows)
	}
	head, _ = CaptureTable(CaptureResult{Package: "heartbeat", Off: s(100), On: s(105)})
	if !strings.Contains(head, "+5.0 %") || !strings.Contains(head, "**missed**") {
		t.Fatalf("5 %% is not under 5 %%: %q", head)
	}
	head, _ = CaptureTable(CaptureResult{Package: "heartbeat", Off: s(100)})
	if !strings.Contains(head, "**missed**") {
		t.Fatalf("no on runs, still met: %q", head)
	}
}
