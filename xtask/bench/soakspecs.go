package bench

import (
	"fmt"
	"strings"

	"github.com/rbee-dev/rbee/xtask/testrun"
)

// SoakSpecs are what one soak run runs, as o says, with JUnit files named
// after name. Without a subset (o.Only empty): under Stress the unit tests
// (-race), the Docker suites and the harness's own Docker tests (-race),
// else the whole Docker suite. With one, only the named packages: each item
// of o.Only is a Docker category (httpcomm, …, harness: `test:category`'s
// names) or a Go package pattern of unit tests starting with "./"
// (./internal/queen/, ./internal/sshx/...). o.Run is go test's -run pattern
// for every spec.
func SoakSpecs(name string, o SoakOptions) ([]testrun.Spec, error) {
	var specs []testrun.Spec
	if len(o.Only) == 0 {
		specs = []testrun.Spec{SuiteSpec(name)}
		if o.Stress {
			specs = StressSpecs(name)
		}
	} else {
		unit := testrun.Spec{Name: name + "-unit", Race: o.Stress}
		suites := testrun.Spec{Name: name + "-docker", Docker: true}
		harness := testrun.Spec{Name: name + "-harness", Docker: true, Race: o.Stress}
		seen := map[string]bool{}
		for _, item := range o.Only {
			item = strings.TrimSpace(item)
			if item == "" || seen[item] {
				continue
			}
			seen[item] = true
			if strings.HasPrefix(item, "./") {
				unit.Packages = append(unit.Packages, item)
				continue
			}
			c, err := testrun.FindCategory(item)
			if err != nil {
				return nil, fmt.Errorf("soak: %q is neither a Docker category nor a package pattern starting with ./: %w", item, err)
			}
			if c.Name == "harness" {
				harness.Packages = append(harness.Packages, c.Package)
			} else {
				suites.Packages = append(suites.Packages, c.Package)
			}
		}
		for _, s := range []testrun.Spec{unit, suites, harness} {
			if len(s.Packages) > 0 {
				specs = append(specs, s)
			}
		}
		if len(specs) == 0 {
			return nil, fmt.Errorf("soak: the subset %q names no package", strings.Join(o.Only, ","))
		}
	}
	for i := range specs {
		specs[i].Run = o.Run
	}
	return specs, nil
}

// describeSubset says which part of the tests a soak ran ("" for all).
func describeSubset(o SoakOptions) string {
	var parts []string
	if len(o.Only) > 0 {
		parts = append(parts, "packages "+strings.Join(o.Only, ", "))
	}
	if o.Run != "" {
		parts = append(parts, "tests matching -run '"+o.Run+"'")
	}
	return strings.Join(parts, ", ")
}
