package bench

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/rbee-dev/rbee/xtask/report"
	"github.com/rbee-dev/rbee/xtask/testrun"
)

// writeSoakReport writes test-results/report.html for a soak: the last
// run's results and every test's result in each run (flake history).
func writeSoakReport(root string, runs []SuiteRun, w io.Writer) {
	if len(runs) == 0 {
		return
	}
	hist := make([][]string, len(runs))
	for i, r := range runs {
		hist[i] = r.Files
	}
	p, err := report.WriteRun(report.RunInput{Title: fmt.Sprintf("rbee soak, %d runs (the last shown)", len(runs)), Files: runs[len(runs)-1].Files,
		History: hist, Artifacts: report.ArtifactsRoot(root), Category: testrun.CategoryOf, Out: filepath.Join(root, "test-results", testrun.RunReport)})
	if err != nil {
		fmt.Fprintf(w, "run report: %v\n", err)
		return
	}
	fmt.Fprintf(w, "report: %s (flake history per test)\n", p)
}
