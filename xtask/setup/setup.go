// Package setup prepares everything a Docker test run needs: SSH keys, static
// binaries, the base image and the service images. The Mage targets in
// magefile.go are thin wrappers over it:
//
//	go run mage.go setup      # keys + binaries + images, idempotent
//	go run mage.go -v setup   # the same, streaming build output
//
// Every Docker object it creates carries the label dev.rbee.project=rbee-netest,
// which is how Cleanup finds them (and nothing else).
package setup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// ContentHashLabel records on a service image the hash of what it was built
// from, so setup rebuilds only what changed. Every image also carries
// dockerx.LabelProject, which cleanup removes by.
const ContentHashLabel = "dev.rbee.content-hash"

// Config says where the repository is and how much to print.
type Config struct {
	Root    string    // repository root (holds go.mod)
	Verbose bool      // stream build and debootstrap output
	Out     io.Writer // progress; os.Stdout when nil
}

func (c Config) out() io.Writer {
	if c.Out == nil {
		return os.Stdout
	}
	return c.Out
}

// logf prints a progress line (always shown).
func (c Config) logf(format string, args ...any) {
	fmt.Fprintf(c.out(), format+"\n", args...)
}

// vlogf prints only with -v.
func (c Config) vlogf(format string, args ...any) {
	if c.Verbose {
		c.logf(format, args...)
	}
}

// FindRoot walks up from dir to the directory holding go.mod.
func FindRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s: run from inside the repository", dir)
		}
	}
}

// Setup runs every step: a Docker engine (EnsureEngine: checked first, so a
// missing one is found before minutes of building), keys, binaries, base
// image, service images. Re-running with nothing changed rebuilds nothing.
func Setup(ctx context.Context, cfg Config) error {
	start := time.Now()
	if err := step(cfg, "engine", func() error { return EnsureEngine(ctx, SystemEngine(cfg.logf)) }); err != nil {
		return err
	}
	if err := step(cfg, "keys", func() error { return Keys(ctx, cfg) }); err != nil {
		return err
	}
	var buildErr error
	if err := step(cfg, "binaries", func() error { buildErr = Build(ctx, cfg); return buildErr }); err != nil {
		// Missing programs are reported but do not stop the images whose
		// inputs exist; the final error still names them.
		if !onlyMissing(err) {
			return err
		}
	}
	if err := step(cfg, "images", func() error { return Images(ctx, cfg) }); err != nil {
		return errors.Join(err, buildErr)
	}
	if buildErr != nil {
		return buildErr
	}
	cfg.logf("setup: done in %s", since(start))
	return nil
}

// onlyMissing reports whether err says nothing but "program not written yet".
func onlyMissing(err error) bool {
	var miss *MissingError
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !errors.As(e, &miss) {
				return false
			}
		}
		return true
	}
	return errors.As(err, &miss)
}

// step runs fn and prints one line with its duration.
func step(cfg Config, name string, fn func() error) error {
	start := time.Now()
	err := fn()
	if err != nil {
		cfg.logf("%s: failed after %s", name, since(start))
		return err
	}
	cfg.logf("%s: ok (%s)", name, since(start))
	return nil
}

func since(t time.Time) string {
	return time.Since(t).Round(100 * time.Millisecond).String()
}
