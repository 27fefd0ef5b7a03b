package nemesis

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Table renders results as a Markdown table: seed, faults (count and kinds),
// jobs done / not done, violations, verdict, wall time.
func Table(rs []Result) string {
	var b strings.Builder
	b.WriteString("| seed | faults | kinds | jobs done | jobs not done | violations | verdict | wall |\n")
	b.WriteString("|---:|---:|---|---:|---:|---:|---|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %d | %d | %s | %d | %d | %d | %s | %s |\n", r.Schedule.Seed, len(r.Schedule.Events), r.Schedule.Kinds(),
			r.Done(), r.Failed(), len(r.Violations), r.Verdict(), r.Wall.Round(100*time.Millisecond))
	}
	return b.String()
}

// AppendReport appends a dated section with the table (and each failing
// seed's report) to the Markdown file at path, creating it with a title.
func AppendReport(path, command string, rs []Result) error {
	var b strings.Builder
	if _, err := os.Stat(path); os.IsNotExist(err) {
		b.WriteString("# Nemesis runs\n\nRandom fault schedules under job traffic, checked against the client-side History (`xtask/nemesis`). Each section is one `go run mage.go nemesis` run; replay a seed with `RBEE_FAULT_SEED=N`.\n")
	}
	fmt.Fprintf(&b, "\n## %s — `%s`\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), command)
	b.WriteString(Table(rs))
	for _, r := range rs {
		if r.Verdict() != "pass" {
			fmt.Fprintf(&b, "\n```text\n%s\n```\n", r.Report())
		}
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
