// Package mutate is mutation testing of the system under test (cmd/ and
// internal/): each mutant of the Catalogue is a small, plausible bug written
// as a source rewrite. Run applies one at a time in a scratch copy of the
// repository, builds its binaries and images (tag mut-<name>, see Tag), checks that
// the images hold exactly those binaries, runs the Docker suites that claim
// the mutant, and records whether a test killed it, which one, how (an
// assertion, a precondition such as a failed bring-up, or a timeout) and the
// wall time. Report renders docs/MUTATION.md.
//
//	go run mage.go mutate -l                  # the catalogue
//	go run mage.go mutate all                 # every mutant (long)
//	go run mage.go mutate ssh-hostkey-any,sse-resume-skips-event
//	go test ./xtask/mutate/                   # the tool's own tests, no Docker
package mutate

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/rbee-dev/rbee/xtask/setup"
)

// Mutant is one source rewrite: in File (slash path from the repository
// root) the snippet Old, which must occur exactly once, becomes New.
type Mutant struct {
	Name   string   // lower-case, [a-z0-9-]; the image tag is mut-<Name>
	Desc   string   // one line: the bug, as a developer would have made it
	File   string   // under cmd/ or internal/
	Old    string   // exact snippet, exactly once in File
	New    string   // its replacement
	Claims []string // the categories whose suites should kill it
	Catch  string   // the assertion that kills it (said for survivors in the report)
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,60}$`)

// Tag is the image tag the mutant's images are built under: mut-<name>, or
// <RBEE_IMAGE_TAG>-mut-<name> when RBEE_IMAGE_TAG names a tag of its own, so
// two checkouts checking the same mutant on one engine neither overwrite nor
// remove each other's images. Docker tags are at most 128 characters; a
// longer prefix is cut (the mutant's name, at most 61, is kept whole).
func (m Mutant) Tag() string {
	tag := "mut-" + m.Name
	if own := os.Getenv("RBEE_IMAGE_TAG"); own != "" && own != "latest" && setup.CheckImageTag(own) == nil {
		if max := 128 - len(tag) - 1; len(own) > max {
			own = own[:max]
		}
		tag = own + "-" + tag
	}
	return tag
}

// Validate checks the mutant's own fields (not the tree).
func (m Mutant) Validate() error {
	switch {
	case !nameRE.MatchString(m.Name):
		return fmt.Errorf("mutant %q: name must be 1-61 of [a-z0-9-]", m.Name)
	case strings.TrimSpace(m.Desc) == "" || strings.Contains(m.Desc, "\n"):
		return fmt.Errorf("mutant %s: description must be one non-empty line", m.Name)
	case !strings.HasPrefix(m.File, "cmd/") && !strings.HasPrefix(m.File, "internal/"):
		return fmt.Errorf("mutant %s: file %s is not under cmd/ or internal/ (the system under test)", m.Name, m.File)
	case strings.HasSuffix(m.File, "_test.go"):
		return fmt.Errorf("mutant %s: file %s is a test", m.Name, m.File)
	case m.Old == "" || m.Old == m.New:
		return fmt.Errorf("mutant %s: the rewrite of %s changes nothing", m.Name, m.File)
	case len(m.Claims) == 0:
		return fmt.Errorf("mutant %s: no category claims it", m.Name)
	}
	for _, c := range m.Claims {
		if !isCategory(c) {
			return fmt.Errorf("mutant %s: unknown category %q (have %s)", m.Name, c, strings.Join(Categories, ", "))
		}
	}
	return nil
}

func isCategory(c string) bool {
	for _, k := range Categories {
		if k == c {
			return true
		}
	}
	return false
}

// Rewrite returns src with the mutant applied, or an error naming the
// mutant and its file when Old does not occur exactly once.
func (m Mutant) Rewrite(src string) (string, error) {
	switch n := strings.Count(src, m.Old); n {
	case 1:
		return strings.Replace(src, m.Old, m.New, 1), nil
	case 0:
		return "", fmt.Errorf("mutant %s: its snippet no longer occurs in %s (the code changed; update the catalogue): %q", m.Name, m.File, m.Old)
	default:
		return "", fmt.Errorf("mutant %s: its snippet occurs %d times in %s, want exactly once (make it longer): %q", m.Name, n, m.File, m.Old)
	}
}

// Apply rewrites the mutant's file under root in place. Call it only on a
// scratch copy.
func (m Mutant) Apply(root string) error {
	p := filepath.Join(root, filepath.FromSlash(m.File))
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("mutant %s: %w", m.Name, err)
	}
	out, err := m.Rewrite(string(b))
	if err != nil {
		return err
	}
	st, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("mutant %s: %w", m.Name, err)
	}
	if err := os.WriteFile(p, []byte(out), st.Mode().Perm()); err != nil {
		return fmt.Errorf("mutant %s: %w", m.Name, err)
	}
	return nil
}

// Check reports every mutant of ms that is malformed, shares a name with
// another, or does not apply to the tree at root (read only).
func Check(root string, ms []Mutant) []error {
	var errs []error
	seen := map[string]bool{}
	for _, m := range ms {
		if err := m.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[m.Name] {
			errs = append(errs, fmt.Errorf("mutant %s: name used twice", m.Name))
		}
		seen[m.Name] = true
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(m.File)))
		if err != nil {
			errs = append(errs, fmt.Errorf("mutant %s: %w", m.Name, err))
			continue
		}
		if _, err := m.Rewrite(string(b)); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Select returns the mutants named in names (in catalogue order); "all" or
// no names means the whole catalogue. Names may be separated by commas or
// spaces. An unknown name is an error that lists the known ones.
func Select(cat []Mutant, names ...string) ([]Mutant, error) {
	var want []string
	for _, n := range names {
		want = append(want, strings.FieldsFunc(n, func(r rune) bool { return r == ',' || r == ' ' })...)
	}
	if len(want) == 0 || (len(want) == 1 && want[0] == "all") {
		return append([]Mutant(nil), cat...), nil
	}
	byName := map[string]bool{}
	for _, n := range want {
		byName[n] = true
	}
	var out []Mutant
	for _, m := range cat {
		if byName[m.Name] {
			out = append(out, m)
			delete(byName, m.Name)
		}
	}
	if len(byName) > 0 {
		var unknown, known []string
		for n := range byName {
			unknown = append(unknown, n)
		}
		for _, m := range cat {
			known = append(known, m.Name)
		}
		sort.Strings(unknown)
		return nil, fmt.Errorf("unknown mutant(s) %s; the catalogue has: %s", strings.Join(unknown, ", "), strings.Join(known, ", "))
	}
	return out, nil
}

// List writes the catalogue, one mutant a line.
func List(cat []Mutant) string {
	var b strings.Builder
	for _, m := range cat {
		fmt.Fprintf(&b, "%-34s %-28s %s\n  %s\n", m.Name, m.File, strings.Join(m.Claims, ","), m.Desc)
	}
	return b.String()
}
