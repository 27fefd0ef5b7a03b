package integration

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// buildToxic builds from the tree every time, so a build/bin/rbee-toxic
// left from an older source is replaced, not reused: a stale file is
// overwritten, and a changed source gives a changed binary. (A scratch
// module stands in for the repository: the same package path, no deps.)
func TestBuildToxicReplacesStaleBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Go programs")
	}
	repo := t.TempDir()
	write := func(rel, body string) {
		t.Helper()
		p := filepath.Join(repo, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/scratch\n\ngo 1.21\n")
	src := func(v string) string {
		return "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"" + v + "\") }\n"
	}
	write("xtask/cmd/rbee-toxic/main.go", src("version-one"))
	write("build/bin/rbee-toxic", "stale binary")
	out := filepath.Join(repo, "build", "bin", "rbee-toxic")

	b1, err := buildToxic(context.Background(), repo)
	if err != nil {
		t.Fatal(err)
	}
	onDisk, _ := os.ReadFile(out)
	if !bytes.Equal(onDisk, b1.bin) || bytes.Contains(onDisk, []byte("stale binary")) {
		t.Fatalf("after a build, %s is not the built binary (%d bytes on disk, %d built)", out, len(onDisk), len(b1.bin))
	}
	if !bytes.Contains(b1.bin, []byte("version-one")) {
		t.Fatal("the built binary lacks its source's string")
	}
	write("xtask/cmd/rbee-toxic/main.go", src("version-two"))
	b2, err := buildToxic(context.Background(), repo)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b2.bin, []byte("version-two")) || bytes.Contains(b2.bin, []byte("version-one")) {
		t.Fatal("after the source changed, the binary was not rebuilt from it")
	}
	if left, _ := filepath.Glob(filepath.Join(repo, "build", "bin", ".rbee-toxic-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
