package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The bench section of BENCHMARKS.md sits between these markers, so that a
// new `mage bench` replaces the last one and keeps the soak sections, which
// `mage soak` appends after it.
const (
	beginMarker = "<!-- bench:begin (written by `go run mage.go bench`; edits inside are replaced) -->"
	endMarker   = "<!-- bench:end -->"
)

const reportIntro = `# Benchmarks

What the Docker test system and the system under test cost on one machine,
measured side by side in one run. Regenerate with ` + "`go run mage.go bench`" + `
(the whole Docker suite's wall time too; ` + "`RBEE_BENCH_SUITE=0`" + ` skips it) and
append a flake-rate section with ` + "`go run mage.go soak 5`" + `. Methods are in
xtask/bench (package doc and the notes under each table). Numbers from a
loaded machine are not comparable with a quiet one: each run records its
load average.

`

// Report is one bench run: machine, headline, tables.
type Report struct {
	Machine  Machine
	Headline []string // one line per target: measured, target, met or not
	Tables   []Table
}

// Markdown renders the report as the bench section (markers included).
func (r Report) Markdown() string {
	var b strings.Builder
	b.WriteString(beginMarker + "\n")
	fmt.Fprintf(&b, "## Bench run %s\n\n", r.Machine.Date.Format("2006-01-02 15:04 MST"))
	b.WriteString(r.Machine.Table().Markdown())
	if len(r.Headline) > 0 {
		b.WriteString("\n### Targets\n\n")
		for _, h := range r.Headline {
			fmt.Fprintf(&b, "- %s\n", h)
		}
	}
	for _, t := range r.Tables {
		b.WriteString("\n" + t.Markdown())
	}
	b.WriteString(endMarker + "\n")
	return b.String()
}

// ReplaceBench returns doc with its bench section replaced by section (or,
// when doc has none, the intro, section and whatever doc held).
func ReplaceBench(doc, section string) (string, error) {
	i := strings.Index(doc, beginMarker)
	j := strings.Index(doc, endMarker)
	switch {
	case i < 0 && j < 0:
		if strings.TrimSpace(doc) == "" {
			return reportIntro + section, nil
		}
		if !strings.HasPrefix(doc, "# ") {
			doc = reportIntro + doc
		}
		// Keep what is there (soak sections) after the new bench section.
		head, rest := splitIntro(doc)
		return head + section + rest, nil
	case i < 0 || j < i:
		return "", errors.New("BENCHMARKS.md: bench markers are broken (one missing or out of order); fix the file by hand")
	}
	return doc[:i] + section + strings.TrimPrefix(doc[j+len(endMarker):], "\n"), nil
}

// splitIntro splits doc after its intro: the text before the first "## ".
func splitIntro(doc string) (string, string) {
	k := strings.Index(doc, "\n## ")
	if k < 0 {
		if !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		return doc + "\n", ""
	}
	return doc[:k+1], "\n" + doc[k+1:]
}

// WriteBench writes r into the file at path (created with its directory if
// missing), replacing the previous bench section.
func WriteBench(path string, r Report) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	doc, err := ReplaceBench(string(old), r.Markdown())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

// AppendSection appends a markdown section (a soak run) to the file at path,
// creating it with the intro if missing.
func AppendSection(path, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	doc := string(old)
	if strings.TrimSpace(doc) == "" {
		doc = reportIntro
	}
	if !strings.HasSuffix(doc, "\n") {
		doc += "\n"
	}
	if !strings.HasSuffix(doc, "\n\n") {
		doc += "\n"
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(doc+section), 0o644)
}
