package catalog

import (
	"fmt"
	"strings"
)

// Limits on the parts of a model id. Hugging Face allows 96 characters for
// an org or repo name; file names get a little more room.
const (
	maxNameLen = 96
	maxFileLen = 128
)

// ModelID is a parsed model id "org/repo:file".
type ModelID struct {
	Org, Repo, File string
}

// String returns the canonical form "org/repo:file".
func (m ModelID) String() string { return m.Org + "/" + m.Repo + ":" + m.File }

// DirName is the catalog directory name of the model: "org--repo--file".
// It is unambiguous because no part may contain "--" (Hugging Face forbids
// "--" in repo ids for the same reason), and it is a single safe path
// element because no part may contain a slash, a dot-dot or start with a
// dot.
func (m ModelID) DirName() string { return m.Org + "--" + m.Repo + "--" + m.File }

// ResolvePath is the hub path of the file: "/org/repo/resolve/main/file".
func (m ModelID) ResolvePath() string {
	return "/" + m.Org + "/" + m.Repo + "/resolve/main/" + m.File
}

// InvalidIDError is returned by ParseModelID; its message names the id and
// what is wrong with it.
type InvalidIDError struct {
	ID     string
	Reason string
}

func (e *InvalidIDError) Error() string {
	return fmt.Sprintf("invalid model id %q: %s (want org/repo:file, e.g. rbee/tiny-ngram:model.bin)", e.ID, e.Reason)
}

// ParseModelID parses and strictly validates "org/repo:file". Each part is
// 1..96 (file: 1..128) characters of [A-Za-z0-9._-], starts with a letter
// or digit, does not end with '-' or '.', and contains neither "--" nor "..". Anything else, including
// path separators, whitespace and control characters, is rejected, so an id
// can never name a path outside the catalog.
func ParseModelID(s string) (ModelID, error) {
	bad := func(reason string, args ...any) (ModelID, error) {
		return ModelID{}, &InvalidIDError{ID: s, Reason: fmt.Sprintf(reason, args...)}
	}
	if s == "" {
		return bad("empty")
	}
	if len(s) > maxNameLen*2+maxFileLen+2 {
		return bad("too long")
	}
	orgRepo, file, ok := strings.Cut(s, ":")
	if !ok {
		return bad("missing \":file\"")
	}
	if strings.Contains(file, ":") {
		return bad("more than one \":\"")
	}
	org, repo, ok := strings.Cut(orgRepo, "/")
	if !ok {
		return bad("missing \"/\" between org and repo")
	}
	if strings.Contains(repo, "/") {
		return bad("more than one \"/\" (files in subfolders are not supported)")
	}
	for _, p := range []struct {
		what, v string
		max     int
	}{{"org", org, maxNameLen}, {"repo", repo, maxNameLen}, {"file", file, maxFileLen}} {
		if err := checkPart(p.v, p.max); err != "" {
			return bad("%s %q %s", p.what, p.v, err)
		}
	}
	return ModelID{Org: org, Repo: repo, File: file}, nil
}

func checkPart(v string, max int) string {
	switch {
	case v == "":
		return "is empty"
	case len(v) > max:
		return fmt.Sprintf("is longer than %d characters", max)
	case !isAlnum(v[0]):
		return "must start with a letter or digit"
	case v[len(v)-1] == '-' || v[len(v)-1] == '.':
		// A trailing '-' would make the "--" separator of DirName ambiguous.
		return "must not end with '-' or '.'"
	case strings.Contains(v, "--"):
		return "must not contain \"--\""
	case strings.Contains(v, ".."):
		return "must not contain \"..\""
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			if c < 0x20 || c >= 0x7f {
				return fmt.Sprintf("contains byte 0x%02x (allowed: letters, digits, '-', '_', '.')", c)
			}
			return fmt.Sprintf("contains %q (allowed: letters, digits, '-', '_', '.')", rune(c))
		}
	}
	return ""
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
