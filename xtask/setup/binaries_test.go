package setup

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The commit stamped into the binaries moves with their sources only: a
// commit of docs or of a package they do not import leaves it (and so the
// images) as it was, one of an imported package moves it, and an
// uncommitted change there marks it dirty.
func TestSourceCommitFollowsTheProgramsSources(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	root := t.TempDir()
	write := func(rel, text string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.invalid", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.invalid")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	commit := func(msg string) string {
		git("add", "-A")
		git("commit", "-q", "-m", msg)
		return git("log", "-1", "--format=%h", "--abbrev=12")
	}
	write("go.mod", "module example.com/m\n\ngo 1.22\n")
	write("cmd/a/main.go", "package main\n\nimport \"example.com/m/internal/x\"\n\nfunc main() { x.F() }\n")
	write("internal/x/x.go", "package x\n\nfunc F() {}\n")
	write("tools/y/y.go", "package y\n")
	write("README.md", "one\n")
	git("init", "-q")
	first := commit("first")
	pkgs := []string{"./cmd/a"}
	ctx := context.Background()
	if got := sourceCommit(ctx, root, pkgs); got != first {
		t.Fatalf("after the first commit: %q, want %q", got, first)
	}
	write("README.md", "two\n")
	write("tools/y/y.go", "package y\n\nconst Z = 1\n")
	commit("docs and a package the program does not import")
	if got := sourceCommit(ctx, root, pkgs); got != first {
		t.Errorf("after a commit outside the sources: %q, want still %q", got, first)
	}
	write("internal/x/x.go", "package x\n\nfunc F() { _ = 1 }\n")
	third := commit("an imported package")
	if got := sourceCommit(ctx, root, pkgs); got != third {
		t.Errorf("after a commit of an imported package: %q, want %q", got, third)
	}
	write("internal/x/x.go", "package x\n\nfunc F() { _ = 2 }\n")
	if got := sourceCommit(ctx, root, pkgs); got != third+"-dirty" {
		t.Errorf("with an uncommitted change of an imported package: %q, want %q", got, third+"-dirty")
	}
	if got := sourceCommit(ctx, t.TempDir(), pkgs); got != "" {
		t.Errorf("outside a repository: %q, want \"\"", got)
	}
}
