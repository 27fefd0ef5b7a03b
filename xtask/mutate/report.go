package mutate

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// RunInfo is what the report says about the run as a whole.
type RunInfo struct {
	Date      time.Time
	Commit    string // of the tree the mutants were applied to
	Dirty     bool   // the tree had uncommitted changes
	LoadStart string // /proc/loadavg at the start
	LoadEnd   string
	CPUs      int
	Parallel  int
	Wall      time.Duration
	Command   string
	Partial   bool // the run is still going, or was stopped
}

// Report renders docs/MUTATION.md: the run, the kill rate, one row per
// mutant and the survivors with the test that would catch each.
func Report(info RunInfo, rs []Result) string {
	var b strings.Builder
	killed, counted := Summary(rs)
	b.WriteString("# Mutation testing\n\n")
	b.WriteString("`go run mage.go mutate all` applies each mutant of the catalogue in\n")
	b.WriteString("`xtask/mutate/catalogue.go` to a scratch copy of the repository, builds its\n")
	b.WriteString("binaries and images (`rbee-test/*:mut-<name>`, prefixed with\n")
	b.WriteString("`$RBEE_IMAGE_TAG-` when that is set, checked by sha256 to hold\n")
	b.WriteString("exactly those binaries), runs the Docker suites that claim it with\n")
	b.WriteString("`go test -tags docker -failfast -json`, and removes its images again. A\n")
	b.WriteString("mutant is killed when a test fails; the first suite that kills it ends\n")
	b.WriteString("its run. This file is rewritten by each run.\n\n")
	b.WriteString("How a kill is classified (from the failing test's output): **timeout** when\n")
	b.WriteString("`panic: test timed out` was printed or the run hit its deadline;\n")
	b.WriteString("**precondition** when the test's first error line is a harness bring-up or\n")
	b.WriteString("wait error (`start <topology>: …`, `wait for <svc>: …`, `<svc> exited with N`);\n")
	b.WriteString("**assertion** otherwise.\n\n")
	b.WriteString("## Last run\n\n")
	dirty := ""
	if info.Dirty {
		dirty = " (with uncommitted changes)"
	}
	fmt.Fprintf(&b, "- date: %s\n", info.Date.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- commit: %s%s\n", orDash(info.Commit), dirty)
	fmt.Fprintf(&b, "- command: `%s`\n", info.Command)
	fmt.Fprintf(&b, "- machine: %d CPUs; load average %s at the start, %s at the end; %d mutant(s) at a time\n",
		info.CPUs, orDash(info.LoadStart), orDash(info.LoadEnd), max(info.Parallel, 1))
	ran := 0
	for _, r := range rs {
		if r.Status != "" {
			ran++
		}
	}
	state := ""
	if info.Partial {
		state = " (partial: the run was still going or was stopped)"
	}
	fmt.Fprintf(&b, "- mutants run: %d of %d%s\n", ran, len(rs), state)
	fmt.Fprintf(&b, "- wall time: %s\n", info.Wall.Round(time.Second))
	rate := "n/a"
	if counted > 0 {
		rate = fmt.Sprintf("%.0f%%", 100*float64(killed)/float64(counted))
	}
	fmt.Fprintf(&b, "- kill rate: **%d of %d (%s)**", killed, counted, rate)
	if n := ran - counted; n > 0 {
		fmt.Fprintf(&b, "; %d not counted (did not compile, or the run failed)", n)
	}
	b.WriteString("\n\n")

	shared := SharedFailures(rs)
	b.WriteString("| mutant | file | claimed by | result | how | killed by | tests run/passed/failed/skipped | wall |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		how := "—"
		if r.Status == Killed {
			how = string(r.How)
			if shared[r.Mutant.Name] {
				how += " †"
			}
		}
		claims := strings.Join(r.Mutant.Claims, ", ")
		if len(r.Missing) > 0 {
			claims += " (no suite yet: " + strings.Join(r.Missing, ", ") + ")"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s | %d/%d/%d/%d | %s |\n",
			r.Mutant.Name, cell(r.Mutant.File), cell(claims), statusCell(r.Status), how,
			cell(orDash(strings.Join(r.KilledBy, ", "))),
			r.Counts.Run, r.Counts.Passed, r.Counts.Failed, r.Counts.Skipped, r.Wall.Round(time.Second))
	}

	if len(shared) > 0 {
		b.WriteString("\n† The same failure (ids and numbers aside) killed two or more different mutants: it is more likely\n")
		b.WriteString("the test failing on this machine (load) than the mutant, so that kill is suspect; rerun those mutants.\n")
	}
	b.WriteString("\n## What each mutant is, and the failure that killed it\n\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "- `%s` — %s.", r.Mutant.Name, r.Mutant.Desc)
		if r.Detail != "" {
			fmt.Fprintf(&b, " %s: `%s`", detailLabel(r.Status), oneLine(r.Detail))
		}
		b.WriteString("\n")
	}

	b.WriteString("\n## Survivors\n\n")
	surv := 0
	for _, r := range rs {
		if r.Status != Survived {
			continue
		}
		surv++
		fmt.Fprintf(&b, "- `%s` (%s): %s\n", r.Mutant.Name, strings.Join(r.Ran, ", "), orDash(r.Mutant.Catch))
	}
	if surv == 0 {
		b.WriteString("None.\n")
	}
	return b.String()
}

func statusCell(s Status) string {
	switch s {
	case Survived:
		return "**survived**"
	case "":
		return "not run"
	}
	return string(s)
}

func detailLabel(s Status) string {
	switch s {
	case Killed:
		return "first failure"
	case NoCompile:
		return "compile error"
	case Invalid:
		return "run error"
	}
	return "note"
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// cell escapes what would break a markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	s = strings.ReplaceAll(s, "`", "'")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

var digitsRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f-]{27,}|\d+`)

// SharedFailures returns the killed mutants whose first failure, with ids
// and numbers blanked, is also the first failure of another killed mutant:
// a failure two different bugs share is probably the test's (a timeout
// under load), not either mutant's.
func SharedFailures(rs []Result) map[string]bool {
	files := map[string]map[string]bool{}
	key := func(r Result) string { return digitsRE.ReplaceAllString(r.Detail, "#") }
	for _, r := range rs {
		if r.Status != Killed || r.Detail == "" {
			continue
		}
		k := key(r)
		if files[k] == nil {
			files[k] = map[string]bool{}
		}
		files[k][r.Mutant.Name] = true
	}
	out := map[string]bool{}
	for _, r := range rs {
		if r.Status == Killed && r.Detail != "" && len(files[key(r)]) > 1 {
			out[r.Mutant.Name] = true
		}
	}
	return out
}
