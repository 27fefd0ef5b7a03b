package suite

import (
	"strings"
	"testing"
)

// QueenConfig reads the configs directory the topology registry names, so
// a name the registry does not know fails at once, listing the ones it does.
func TestQueenConfigNeedsARegisteredTopology(t *testing.T) {
	r := run(t, func(tb testing.TB) { QueenConfig(tb, "fullstack", map[string]string{"retries": "1"}) })
	if !r.fatal || len(r.msgs) == 0 || !strings.Contains(r.msgs[0], `unknown topology "fullstack"`) || !strings.Contains(r.msgs[0], "full-stack") {
		t.Fatalf("unregistered topology: %v; want a failure naming it and the registered ones", r.msgs)
	}
	if b := QueenConfig(t, "full-stack", map[string]string{"retries": "7"}); !strings.Contains(string(b), "\nretries = 7") {
		t.Fatalf("full-stack variant:\n%s", b)
	}
}
