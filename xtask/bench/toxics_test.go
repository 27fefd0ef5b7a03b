package bench

import (
	"strings"
	"testing"
	"time"
)

func repeat(d time.Duration, n int) []time.Duration {
	ds := make([]time.Duration, n)
	for i := range ds {
		ds[i] = d
	}
	return ds
}

// ToxicTable derives added delay and overhead from the batches' medians and
// judges each target on them: met within the bounds, missed outside.
func TestToxicTableVerdicts(t *testing.T) {
	base := ToxicResult{PerBatch: 3, Direct: repeat(2*time.Millisecond, 3), FirstInject: time.Second,
		Inject: repeat(50*time.Millisecond, 4), Recover: repeat(60*time.Millisecond, 4), InForce: 2, InForceOf: 2}
	good := base
	good.Proxied = repeat(2500*time.Microsecond, 3)
	good.Latency = repeat(104*time.Millisecond, 3)
	head, tab := ToxicTable(good)
	if len(head) != 3 || len(tab.Rows) != 9 {
		t.Fatalf("headline %q, %d rows", head, len(tab.Rows))
	}
	for _, h := range head {
		if !strings.HasSuffix(h, ": met") {
			t.Errorf("%q: want met", h)
		}
	}
	if !strings.Contains(head[0], "102 %") {
		t.Errorf("accuracy line %q: want 102 %% (104 ms − 2 ms direct)", head[0])
	}
	bad := base
	bad.Proxied = repeat(4*time.Millisecond, 3)
	bad.Latency = repeat(125*time.Millisecond, 3)
	bad.Inject = repeat(200*time.Millisecond, 4)
	head, _ = ToxicTable(bad)
	for _, h := range head {
		if !strings.HasSuffix(h, "**missed**") {
			t.Errorf("%q: want missed", h)
		}
	}
}
