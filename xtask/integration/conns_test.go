package integration

import (
	"slices"
	"testing"
)

func TestParseSS(t *testing.T) {
	// `ss -Htn state established …` omits the state column; `ss -K` prints
	// netid and state; both end with the two address columns.
	out := "0      0      172.29.7.10:41234 172.29.7.20:9000\n" +
		"tcp   ESTAB 0      0          172.29.7.10:41236    172.29.7.20:9000       \n" +
		"garbage line\n"
	got := parseSS(out)
	want := []Connection{{"172.29.7.10:41234", "172.29.7.20:9000"}, {"172.29.7.10:41236", "172.29.7.20:9000"}}
	if !slices.Equal(got, want) {
		t.Fatalf("parseSS = %v, want %v", got, want)
	}
	if l := Locals(got); !slices.Equal(l, []string{"172.29.7.10:41234", "172.29.7.10:41236"}) {
		t.Fatalf("Locals = %v", l)
	}
}
