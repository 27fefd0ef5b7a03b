package dockerx

import (
	"os"
	"strconv"
	"testing"
)

// OwnerGone (the reaper's test) and OwnerAlive (the soak's leftover count)
// judge the same labels; a reused pid, a dead pid, another host, a kept
// stack and missing labels each come out as each caller needs.
func TestOwnerGoneAndAlive(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	host := Hostname()
	start := ProcStart(os.Getpid())
	if start == "" {
		t.Skip("no /proc")
	}
	for _, tc := range []struct {
		name        string
		labels      map[string]string
		gone, alive bool
	}{
		{"alive", map[string]string{LabelOwnerPID: self, LabelOwnerHost: host, LabelOwnerStart: start}, false, true},
		{"alive, no start label", map[string]string{LabelOwnerPID: self, LabelOwnerHost: host}, false, true},
		{"pid reused", map[string]string{LabelOwnerPID: self, LabelOwnerHost: host, LabelOwnerStart: "1"}, true, false},
		{"dead pid", map[string]string{LabelOwnerPID: "999999999", LabelOwnerHost: host}, true, false},
		{"other host", map[string]string{LabelOwnerPID: "999999999", LabelOwnerHost: host + "-elsewhere"}, false, true},
		{"kept", map[string]string{LabelOwnerPID: "999999999", LabelOwnerHost: host, LabelKeep: "1"}, false, false},
		{"no pid", map[string]string{LabelOwnerHost: host}, false, false},
		{"no labels", map[string]string{}, false, false},
	} {
		if got := OwnerGone(tc.labels); got != tc.gone {
			t.Errorf("%s: OwnerGone = %v, want %v", tc.name, got, tc.gone)
		}
		if got := OwnerAlive(tc.labels); got != tc.alive {
			t.Errorf("%s: OwnerAlive = %v, want %v", tc.name, got, tc.alive)
		}
	}
	own := OwnerLabels()
	if own[LabelOwnerPID] != self || own[LabelOwnerHost] != host || own[LabelOwnerStart] != start {
		t.Errorf("OwnerLabels = %v", own)
	}
	if !OwnerAlive(own) || OwnerGone(own) {
		t.Errorf("this process's own labels: alive %v, gone %v", OwnerAlive(own), OwnerGone(own))
	}
}

func TestFilterAndName(t *testing.T) {
	f := Filter(Project, LabelRun+"=r1")
	if got := f["label"]; len(got) != 2 || !got[Project] || !got[LabelRun+"=r1"] {
		t.Errorf("Filter = %v", f)
	}
	if got := Name([]string{"/rbee-x-queen-1"}, "abc"); got != "rbee-x-queen-1" {
		t.Errorf("Name = %q", got)
	}
	if got := Name(nil, "0123456789abcdef0123456789"); got != "0123456789abcdef012" {
		t.Errorf("Name(id) = %q", got)
	}
}
