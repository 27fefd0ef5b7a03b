package setup

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/client"

	"github.com/rbee-dev/rbee/xtask/dockerx"
)

// Root images the base image can start from.
const (
	UpstreamRoot = "debian:bookworm-slim"           // used when present or pullable
	ImportedRoot = "rbee-test/debian-root:bookworm" // debootstrap + import otherwise
)

// BasePackages are installed into the base image on either path. Dockerfile.base
// installs the same list (a test keeps the two in step).
var BasePackages = []string{
	"openssh-server", "iptables", "iproute2", "tini", "curl", "ca-certificates", "procps",
}

// BaseImage builds rbee-test/base:bookworm (see baseImage).
func BaseImage(ctx context.Context, cfg Config) error {
	cli, err := dockerx.Connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	_, err = baseImage(ctx, cli, cfg)
	return err
}

// baseImage finds or makes a Debian bookworm root and builds Dockerfile.base
// on it. It returns the base image ID.
func baseImage(ctx context.Context, cli client.APIClient, cfg Config) (string, error) {
	rootRef, rootID, err := debianRoot(ctx, cli, cfg)
	if err != nil {
		return "", err
	}
	spec := imageSpec{
		Tag:        BaseTag,
		Dockerfile: "docker/Dockerfile.base",
		Files:      []ctxFile{{Name: "docker/Dockerfile.base", Src: filepath.Join(cfg.Root, "docker", "Dockerfile.base"), Mode: 0o644}},
		Args:       map[string]string{"BASE": rootRef},
		HostArgs:   map[string]string{},
		Parent:     rootID,
	}
	if m, err := AptMirror("/etc"); err == nil {
		spec.HostArgs["APT_MIRROR"] = m
	}
	return buildImage(ctx, cli, cfg, spec)
}

// debianRoot returns the reference and ID of the root to build on: a local
// debian:bookworm-slim, else a previously imported root, else a pulled
// debian:bookworm-slim, else a fresh debootstrap.
func debianRoot(ctx context.Context, cli client.APIClient, cfg Config) (string, string, error) {
	for _, ref := range []string{UpstreamRoot, ImportedRoot} {
		if ins, err := cli.ImageInspect(ctx, ref); err == nil {
			cfg.vlogf("base: using %s", ref)
			return ref, ins.ID, nil
		}
	}
	if os.Getenv("RBEE_BASE_PULL") != "0" {
		if err := pull(ctx, cli, cfg, UpstreamRoot, 20*time.Second); err == nil {
			if ins, err := cli.ImageInspect(ctx, UpstreamRoot); err == nil {
				return UpstreamRoot, ins.ID, nil
			}
		} else {
			cfg.logf("base: cannot pull %s (%v); building it with debootstrap", UpstreamRoot, firstLine(err))
		}
	}
	id, err := debootstrapRoot(ctx, cli, cfg)
	if err != nil {
		return "", "", err
	}
	return ImportedRoot, id, nil
}

func pull(ctx context.Context, cli client.APIClient, cfg Config, ref string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := cli.ImagePull(ctx, ref, client.ImagePullOptions{})
	if err != nil {
		return err
	}
	defer res.Close()
	_, err = readStream(res, cfg.out(), cfg.Verbose)
	return err
}

// debootstrapRoot builds a minimal bookworm root with the base packages from
// the host's Debian mirror and imports it as ImportedRoot.
func debootstrapRoot(ctx context.Context, cli client.APIClient, cfg Config) (string, error) {
	mirror, err := AptMirror("/etc")
	if err != nil {
		return "", fmt.Errorf("base: %w", err)
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", fmt.Errorf("base: %s is not available and debootstrap is not installed: apt-get install debootstrap (or docker load %s)", UpstreamRoot, UpstreamRoot)
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("base: debootstrap needs root: run `sudo go run mage.go image:base` once, or docker load %s", UpstreamRoot)
	}
	work := filepath.Join(cfg.Root, "build")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(work, "rootfs-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	target := filepath.Join(dir, "bookworm")

	start := time.Now()
	cfg.logf("base: debootstrap bookworm from %s (about a minute) …", mirror)
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase",
		"--include="+strings.Join(BasePackages, ","), "bookworm", target, mirror)
	if err := runWithProgress(cmd, cfg, "base: debootstrap"); err != nil {
		return "", fmt.Errorf("base: debootstrap from %s failed: %w", mirror, err)
	}
	cfg.logf("base: debootstrap done in %s; importing as %s", since(start), ImportedRoot)

	tarCmd := exec.CommandContext(ctx, "tar", "-C", target, "--numeric-owner",
		"--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
		"--exclude=./var/cache/apt/archives/*.deb", "--exclude=./var/lib/apt/lists/*",
		// Documentation is trimmed on both paths (slim excludes it via dpkg).
		"--exclude=./usr/share/doc/*", "--exclude=./usr/share/man/*", "--exclude=./usr/share/info/*",
		"-c", ".")
	stdout, err := tarCmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	var tarErr strings.Builder
	tarCmd.Stderr = &tarErr
	if err := tarCmd.Start(); err != nil {
		return "", fmt.Errorf("base: tar: %w", err)
	}
	res, err := cli.ImageImport(ctx, client.ImageImportSource{Source: stdout, SourceName: "-"}, ImportedRoot,
		client.ImageImportOptions{
			Message: "debootstrap --variant=minbase bookworm " + mirror,
			Changes: []string{"LABEL " + dockerx.Project, `CMD ["bash"]`},
		})
	if err != nil {
		tarCmd.Process.Kill()
		tarCmd.Wait()
		return "", fmt.Errorf("base: import: %w", err)
	}
	_, streamErr := readStream(res, cfg.out(), cfg.Verbose)
	res.Close()
	if err := tarCmd.Wait(); err != nil {
		return "", fmt.Errorf("base: tar: %w: %s", err, tarErr.String())
	}
	if streamErr != nil {
		return "", fmt.Errorf("base: import: %w", streamErr)
	}
	ins, err := cli.ImageInspect(ctx, ImportedRoot)
	if err != nil {
		return "", fmt.Errorf("base: imported root not found: %w", err)
	}
	return ins.ID, nil
}

// runWithProgress runs a debootstrap-like command. With -v every line is
// echoed; otherwise a summary line is printed every 10 s. On failure the
// error carries the last lines of output.
func runWithProgress(cmd *exec.Cmd, cfg Config, label string) error {
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return err
	}
	var mu sync.Mutex
	counts := map[string]int{}
	var tail []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			if cfg.Verbose {
				fmt.Fprintln(cfg.out(), line)
			}
			mu.Lock()
			for _, verb := range []string{"Retrieving", "Unpacking", "Configuring"} {
				if strings.HasPrefix(line, "I: "+verb+" ") {
					counts[verb]++
				}
			}
			tail = append(tail, line)
			if len(tail) > 20 {
				tail = tail[1:]
			}
			mu.Unlock()
		}
		io.Copy(io.Discard, pr)
	}()
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait(); pw.Close() }()
	start := time.Now()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-waitErr:
			<-done
			if err != nil {
				mu.Lock()
				defer mu.Unlock()
				return fmt.Errorf("%w\n--- last output ---\n%s", err, strings.Join(tail, "\n"))
			}
			return nil
		case <-tick.C:
			if !cfg.Verbose {
				mu.Lock()
				cfg.logf("%s: %s: retrieved %d, unpacked %d, configured %d packages", label,
					since(start), counts["Retrieving"], counts["Unpacking"], counts["Configuring"])
				mu.Unlock()
			}
		}
	}
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
