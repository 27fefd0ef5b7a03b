package integration

import (
	"os"
	"path/filepath"
	"testing"
)

// From a suite's package directory (xtask/tests/docker/<category>/) the
// repository root is found, not xtask/, whose tests/docker/ holds no compose file.
func TestFindRepoDirSkipsSuiteDirectories(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "tests", "docker"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "tests", "docker", Localhost.file), []byte("services: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(root, "xtask", "tests", "docker", "failure")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(pkg)
	got, err := findRepoDir()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := filepath.EvalSymlinks(root)
	if g, _ := filepath.EvalSymlinks(got); g != want {
		t.Fatalf("findRepoDir() = %s, want %s", got, root)
	}
}
