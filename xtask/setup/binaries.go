package setup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Program is one binary that goes into the images.
type Program struct {
	Name string // file name under build/bin
	Pkg  string // Go package that builds it, relative to the root
}

// Programs are the binaries `mage build` produces. The first four are the
// system under test (RBEE_BIN_DIR can replace them); the hub, the rogue, the
// capture and the fault proxy are test tooling.
var Programs = []Program{
	{"queen-rbee", "./cmd/queen-rbee"},
	{"rbee-hive", "./cmd/rbee-hive"},
	{"llm-worker-rbee", "./cmd/llm-worker-rbee"},
	{"rbee-keeper", "./cmd/rbee-keeper"},
	{"rbee-model-hub", "./xtask/cmd/rbee-model-hub"},
	{"rbee-rogue", "./xtask/cmd/rbee-rogue"},     // the security suite's attacker, bind-mounted into a base container
	{"rbee-capture", "./xtask/cmd/rbee-capture"}, // the harness's packet capture, copied into a base container
	{"rbee-toxic", "./xtask/cmd/rbee-toxic"},     // the connection-level fault proxy, copied into fault helpers
}

// BinDirEnv names the variable that makes image builds take the four rbee
// programs from another directory (to test another implementation).
const BinDirEnv = "RBEE_BIN_DIR"

// MissingError lists programs whose package is not in the tree (yet).
type MissingError struct{ Pkgs []string }

func (e *MissingError) Error() string {
	return fmt.Sprintf("not in the tree yet: %s (write them, then run `go run mage.go build`)", strings.Join(e.Pkgs, ", "))
}

// BinDir is where Build writes the binaries.
func BinDir(root string) string { return filepath.Join(root, "build", "bin") }

// ProgramPath is where images take a program from: RBEE_BIN_DIR for the four
// rbee programs when set, else build/bin.
func ProgramPath(root, name string) string {
	if d := os.Getenv(BinDirEnv); d != "" && name != "rbee-model-hub" && name != "rbee-rogue" && name != "rbee-toxic" {
		return filepath.Join(d, name)
	}
	return filepath.Join(BinDir(root), name)
}

// Build compiles every program whose package exists into build/bin as a
// static linux/amd64 binary. Programs that are not in the tree are skipped
// and reported with a *MissingError (after building the others); compile
// errors are returned joined.
func Build(ctx context.Context, cfg Config) error {
	out := BinDir(cfg.Root)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	// One go invocation for every program: the packages are loaded once,
	// and a binary whose build ID matches its inputs is not relinked, so a
	// warm build costs about one `go list`.
	var missing, pkgs []string
	var errs []error
	for _, p := range Programs {
		if !hasGoFiles(filepath.Join(cfg.Root, p.Pkg)) {
			missing = append(missing, p.Pkg)
			cfg.logf("build: %s: package %s is missing, skipped", p.Name, p.Pkg)
			continue
		}
		if filepath.Base(p.Pkg) != p.Name {
			return fmt.Errorf("build: %s: package %s must end in the program's name (go build -o DIR/ names binaries after their package)", p.Name, p.Pkg)
		}
		pkgs = append(pkgs, p.Pkg)
	}
	if len(pkgs) > 0 {
		start := time.Now()
		// The commit stamped in is the last one that changed the programs'
		// sources, and -buildvcs=false keeps HEAD out: a commit of tests or
		// docs leaves the binaries, and so the images, as they were.
		ldflags := "-s -w -X github.com/rbee-dev/rbee/internal/buildinfo.Version=" + version()
		if c := sourceCommit(ctx, cfg.Root, pkgs); c != "" {
			ldflags += " -X github.com/rbee-dev/rbee/internal/buildinfo.Commit=" + c
		}
		args := append([]string{"build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out + string(filepath.Separator)}, pkgs...)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = cfg.Root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if cfg.Verbose {
			cmd.Stdout, cmd.Stderr = io.MultiWriter(&buf, cfg.out()), io.MultiWriter(&buf, cfg.out())
		}
		if err := cmd.Run(); err != nil {
			errs = append(errs, fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, strings.TrimSpace(buf.String())))
		} else {
			cfg.vlogf("build: %d programs into build/bin (%s)", len(pkgs), since(start))
		}
	}
	if len(missing) > 0 {
		errs = append(errs, &MissingError{Pkgs: missing})
	}
	return errors.Join(errs...)
}

// version is RBEE_VERSION or the development default.
func version() string {
	if v := os.Getenv("RBEE_VERSION"); v != "" {
		return v
	}
	return "0.1.0-dev"
}

// sourceCommit is the last commit that changed a package pkgs are built
// from (or go.mod, go.sum), with "-dirty" when the work tree changes one
// now; "" when git or go cannot tell.
func sourceCommit(ctx context.Context, root string, pkgs []string) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	list := exec.CommandContext(ctx, "go", append([]string{"list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}"}, pkgs...)...)
	list.Dir = root
	list.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	b, err := list.Output()
	if err != nil {
		return ""
	}
	paths := []string{"go.mod", "go.sum"}
	for _, dir := range strings.Fields(string(b)) {
		if rel, err := filepath.Rel(root, dir); err == nil && filepath.IsLocal(rel) {
			paths = append(paths, filepath.ToSlash(rel))
		}
	}
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", append(args, append([]string{"--"}, paths...)...)...)
		cmd.Dir = root
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	c, err := git("log", "-1", "--format=%h", "--abbrev=12")
	if err != nil || c == "" {
		return ""
	}
	if st, err := git("status", "--porcelain", "--untracked-files=no"); err == nil && st != "" {
		c += "-dirty"
	}
	return c
}

// hasGoFiles reports whether dir holds a non-test Go file.
func hasGoFiles(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		n := e.Name()
		if !e.IsDir() && strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go") {
			return true
		}
	}
	return false
}
