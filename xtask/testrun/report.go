package testrun

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/rbee-dev/rbee/xtask/report"
)

// RunReport is the run overview's file name in the JUnit directory.
const RunReport = "report.html"

// writeRunReport writes <JUnitDir>/report.html for the JUnit files that
// exist and names it on o.Stdout; a failure to write it is reported, not
// fatal (the summary table has been printed).
func writeRunReport(o Options, specs []Spec) {
	var files []string
	for _, s := range specs {
		files = append(files, o.JUnitPath(s))
	}
	var have []string
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			have = append(have, f)
		}
	}
	if len(have) == 0 {
		return
	}
	p, err := report.WriteRun(report.RunInput{Title: "rbee test run", Files: have, Artifacts: report.ArtifactsRoot(o.Root),
		Category: o.categories(specs), Out: filepath.Join(o.JUnitDir, RunReport)})
	if err != nil {
		fmt.Fprintf(o.Stderr, "run report: %v\n", err)
		return
	}
	fmt.Fprintf(o.Stdout, "report: %s (failed tests link their report.html)\n", p)
}

// categories names a test's category in the run report exactly as the
// summary table names its row: a collapsed spec's name for all of its
// packages, a remote engine's label after a category run through it.
func (o Options) categories(specs []Spec) func(file, pkg string) string {
	byFile := map[string]Spec{}
	for _, s := range specs {
		byFile[o.JUnitPath(s)] = s
	}
	return func(file, pkg string) string {
		s, ok := byFile[file]
		if !ok {
			return categoryOf(pkg)
		}
		if s.Collapse != "" {
			return s.Collapse
		}
		if label, remote := s.Env["DOCKER_HOST"]; remote {
			return categoryOf(pkg) + " (via " + label + ")"
		}
		return categoryOf(pkg)
	}
}

// CategoryOf names a JUnit package's category as the summary table does
// for a spec that is not collapsed.
func CategoryOf(file, pkg string) string { return categoryOf(pkg) }
