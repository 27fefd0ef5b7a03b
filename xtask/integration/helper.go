package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/rbee-dev/rbee/xtask/dockerx"
	"github.com/rbee-dev/rbee/xtask/toxic"
)

// DefaultFaultImage is the image of the fault helpers: the project's base
// image, which has iptables, iproute2 (tc) and a shell.
const DefaultFaultImage = "rbee-test/base:bookworm"

// helper is a container that shares one target's network namespace
// (network_mode container:<target>) with NET_ADMIN, so that iptables and tc
// run against the target's namespace while the target itself has no extra
// capability. Everything goes through the Docker API, so it works against a
// remote DOCKER_HOST too (host nsenter would not). A restart gives the target
// a new namespace; the helper would be left in the old one, so helpers
// remember the target's start and are replaced when it changed.
type helper struct {
	id          string
	targetStart string // target's State.StartedAt when the helper joined it
	proxy       bool   // rbee-toxic runs in it (connection-level faults)
}

// helperFor returns a helper in target's current namespace, creating or
// replacing it as needed; nil (no error) when the target is not running.
// The caller holds faultMu.
func (h *Harness) helperFor(ctx context.Context, target string) (*helper, error) {
	s, err := h.service(target)
	if err != nil {
		return nil, err
	}
	ins, err := h.docker.ContainerInspect(ctx, s.id, client.ContainerInspectOptions{})
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", target, err)
	}
	st := ins.Container.State
	if st == nil || !st.Running {
		return nil, nil
	}
	if hp := h.helpers[target]; hp != nil {
		if hp.targetStart == st.StartedAt {
			return hp, nil
		}
		_, _ = h.docker.ContainerRemove(ctx, hp.id, client.ContainerRemoveOptions{Force: true})
		delete(h.helpers, target)
	}
	labels := h.labels()
	labels[dockerx.LabelRole] = "fault-helper"
	labels[dockerx.LabelTarget] = target
	t0 := time.Now()
	created, err := h.docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: fmt.Sprintf("%s-fault-%s-%d", h.name, target, time.Now().UnixNano()%1e6),
		Config: &container.Config{
			Image:      h.cfg.faultImage,
			Entrypoint: []string{"sleep", "infinity"},
			Cmd:        nil,
			Labels:     labels,
		},
		HostConfig: &container.HostConfig{
			NetworkMode: container.NetworkMode("container:" + s.id),
			CapAdd:      []string{"NET_ADMIN", "NET_RAW"},
			AutoRemove:  false,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("create fault helper for %s (image %s): %w", target, h.cfg.faultImage, err)
	}
	if _, err := h.docker.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		_, _ = h.docker.ContainerRemove(context.WithoutCancel(ctx), created.ID, client.ContainerRemoveOptions{Force: true})
		return nil, fmt.Errorf("start fault helper for %s: %w", target, err)
	}
	hp := &helper{id: created.ID, targetStart: st.StartedAt}
	h.helpers[target] = hp
	h.logf("%s: fault helper for %s ready in %v", h.name, target, time.Since(t0).Round(time.Millisecond))
	return hp, nil
}

// ToxicBinEnv names a prebuilt rbee-toxic (static, linux, for the Docker
// engine's architecture); without it the harness builds
// build/bin/rbee-toxic from the tree once per test process, so a binary
// left by an earlier `mage setup` is never used stale after its source
// changed (an unchanged tree builds from the Go build cache in seconds).
const ToxicBinEnv = "RBEE_TOXIC_BIN"

var (
	toxicBuild sync.Mutex
	toxicBin   []byte // built by this process
)

// toxicBinary returns the rbee-toxic binary to copy into helpers.
func (h *Harness) toxicBinary(ctx context.Context) ([]byte, error) {
	if p := os.Getenv(ToxicBinEnv); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ToxicBinEnv, err)
		}
		return b, nil
	}
	toxicBuild.Lock()
	defer toxicBuild.Unlock()
	if toxicBin != nil {
		return toxicBin, nil
	}
	b, err := buildToxic(ctx, h.repoDir)
	if err != nil {
		return nil, err
	}
	h.logf("%s: %s", h.name, b.msg)
	toxicBin = b.bin
	return toxicBin, nil
}

type builtToxic struct {
	bin []byte
	msg string
}

// buildToxic builds ./xtask/cmd/rbee-toxic of repo into build/bin: into a
// temporary file renamed over the old one, so that another test process
// reading the binary meanwhile gets either whole file.
func buildToxic(ctx context.Context, repo string) (builtToxic, error) {
	out := filepath.Join(repo, "build", "bin", "rbee-toxic")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return builtToxic{}, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".rbee-toxic-*")
	if err != nil {
		return builtToxic{}, err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	// A cold build on a loaded machine outlasts a fault call's context:
	// give it its own budget.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
	defer cancel()
	t0 := time.Now()
	cmd := exec.CommandContext(bctx, "go", "build", "-trimpath", "-o", tmp.Name(), "./xtask/cmd/rbee-toxic")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return builtToxic{}, fmt.Errorf("build rbee-toxic (or set %s to a prebuilt one): %v\n%s", ToxicBinEnv, err, b)
	}
	bin, err := os.ReadFile(tmp.Name())
	if err != nil {
		return builtToxic{}, err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return builtToxic{}, err
	}
	return builtToxic{bin: bin, msg: fmt.Sprintf("built %s from the tree in %v", out, time.Since(t0).Round(time.Millisecond))}, nil
}

// startProxy copies rbee-toxic into hp (through the Docker API, so a remote
// engine works too) and starts it there, detached; the next apply waits
// for its control port. The caller holds faultMu.
func (h *Harness) startProxy(ctx context.Context, target string, hp *helper) error {
	t0 := time.Now()
	bin, err := h.toxicBinary(ctx)
	if err != nil {
		return err
	}
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(toxic.BinPath, "/"), Mode: 0o755, Size: int64(len(bin)), ModTime: time.Now()}); err != nil {
		return err
	}
	if _, err := tw.Write(bin); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if _, err := h.docker.CopyToContainer(ctx, hp.id, client.CopyToContainerOptions{DestinationPath: "/", Content: &tb}); err != nil {
		return fmt.Errorf("copy rbee-toxic into the fault helper of %s: %w", target, err)
	}
	ex, err := h.docker.ExecCreate(ctx, hp.id, client.ExecCreateOptions{Cmd: []string{"sh", "-c", "exec " + toxic.BinPath + " serve >>" + toxic.LogPath + " 2>&1"}})
	if err != nil {
		return fmt.Errorf("start rbee-toxic for %s: %w", target, err)
	}
	if _, err := h.docker.ExecStart(ctx, ex.ID, client.ExecStartOptions{Detach: true}); err != nil {
		return fmt.Errorf("start rbee-toxic for %s: %w", target, err)
	}
	hp.proxy = true
	h.logf("%s: toxic proxy for %s started in %v", h.name, target, time.Since(t0).Round(time.Millisecond))
	return nil
}
