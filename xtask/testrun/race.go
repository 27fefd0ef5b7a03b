package testrun

// racePackages are the packages whose tests always run with -race: the
// harness's own tests, whose goroutines poll a Harness while the test
// changes it (CloneService, faults), so a data race there is a bug the
// suites would otherwise only hit now and then.
var racePackages = map[string]bool{"./xtask/integration/": true}

// SplitRace returns s unchanged when it already runs with -race or holds
// no package of racePackages; otherwise the spec without those packages
// (left out when none remain) and one named s.Name+"-race" with them and
// -race, so that they get their own go test run and JUnit file.
func SplitRace(s Spec) []Spec {
	if s.Race {
		return []Spec{s}
	}
	var plain, race []string
	for _, p := range s.Packages {
		if racePackages[p] {
			race = append(race, p)
		} else {
			plain = append(plain, p)
		}
	}
	if len(race) == 0 {
		return []Spec{s}
	}
	r := s
	r.Name, r.Packages, r.Race = s.Name+"-race", race, true
	if len(plain) == 0 {
		return []Spec{r}
	}
	s.Packages = plain
	return []Spec{s, r}
}
