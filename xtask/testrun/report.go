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
func writeRunReport(o Options, files []string) {
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
		Category: CategoryOf, Out: filepath.Join(o.JUnitDir, RunReport)})
	if err != nil {
		fmt.Fprintf(o.Stderr, "run report: %v\n", err)
		return
	}
	fmt.Fprintf(o.Stdout, "report: %s (failed tests link their report.html)\n", p)
}

// CategoryOf names a JUnit package's category as the summary table does.
func CategoryOf(pkg string) string { return categoryOf(pkg) }
