package testrun

import (
	"slices"
	"testing"
)

func TestSplitRace(t *testing.T) {
	docker := Spec{Name: "docker", Docker: true, Packages: []string{"./xtask/tests/docker/httpcomm/", "./xtask/integration/"}}
	got := SplitRace(docker)
	if len(got) != 2 || got[0].Race || !slices.Equal(got[0].Packages, []string{"./xtask/tests/docker/httpcomm/"}) ||
		got[1].Name != "docker-race" || !got[1].Race || !got[1].Docker || !slices.Equal(got[1].Packages, []string{"./xtask/integration/"}) {
		t.Fatalf("split %+v", got)
	}
	if got := SplitRace(Spec{Name: "docker-harness", Packages: []string{"./xtask/integration/"}}); len(got) != 1 || !got[0].Race || got[0].Name != "docker-harness-race" {
		t.Fatalf("harness alone: %+v", got)
	}
	for _, s := range []Spec{{Name: "unit", Packages: []string{"./..."}}, {Name: "x", Race: true, Packages: []string{"./xtask/integration/"}}} {
		if got := SplitRace(s); len(got) != 1 || got[0].Name != s.Name || got[0].Race != s.Race {
			t.Fatalf("%s changed: %+v", s.Name, got)
		}
	}
	// Every harness category package is covered.
	c, err := FindCategory("harness")
	if err != nil || !racePackages[c.Package] {
		t.Fatalf("the harness category %q does not run with -race (%v)", c.Package, err)
	}
}
