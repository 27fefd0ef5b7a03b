package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
	toxics      bool   // toxics were applied since it started: each apply sets the proxy's state
	// admin, when rbee-toxic runs and the host is on the target's bridge,
	// runs the helper's scripts over HTTP (a few ms) instead of docker
	// exec (tens of ms on a loaded engine).
	admin *adminClient
}

// run runs a shell script in hp: through its admin endpoint when it has
// one, else through docker exec. A script is never sent twice: one that
// failed in transit may have run, and some (ss -K) must not run again.
func (h *Harness) run(ctx context.Context, hp *helper, script string) (CommandResult, error) {
	if hp.admin != nil {
		return hp.admin.run(ctx, script)
	}
	return execIn(ctx, h.docker, hp.id, []string{"sh", "-c", script})
}

// adminClient talks to rbee-toxic's admin endpoint in one helper.
type adminClient struct {
	url, token string
	hc         *http.Client
}

func newAdminClient(addr netip.AddrPort) (*adminClient, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	// A transport of its own: the helper's connection goes when the
	// helper does (close), not when a shared pool gets round to it.
	tr := &http.Transport{MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second}
	return &adminClient{url: "http://" + addr.String(), token: hex.EncodeToString(b[:]), hc: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}, nil
}

func (a *adminClient) close() { a.hc.CloseIdleConnections() }

func (a *adminClient) do(ctx context.Context, method, path, body string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.url+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

func (a *adminClient) run(ctx context.Context, script string) (CommandResult, error) {
	b, err := a.do(ctx, http.MethodPost, "/script", script)
	if err != nil {
		return CommandResult{}, fmt.Errorf("fault helper admin %s: %w", a.url, err)
	}
	var r toxic.ScriptResult
	if err := json.Unmarshal(b, &r); err != nil {
		return CommandResult{}, fmt.Errorf("fault helper admin %s: answer %.200q: %w", a.url, b, err)
	}
	return CommandResult{ExitCode: r.Exit, Stdout: r.Stdout, Stderr: r.Stderr}, nil
}

// await waits until the just-started endpoint answers; only "nothing
// listens yet" is retried, for up to limit. alive (when not nil) is asked
// about once a second whether the server can still come up; its error ends
// the wait at once.
func (a *adminClient) await(ctx context.Context, limit time.Duration, alive func(context.Context) error) error {
	deadline := time.Now().Add(limit)
	nextCheck := time.Now().Add(time.Second)
	for {
		_, err := a.do(ctx, http.MethodGet, "/ping", "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			return err
		}
		if alive != nil && time.Now().After(nextCheck) {
			if aerr := alive(ctx); aerr != nil {
				return fmt.Errorf("%w (%v)", aerr, err)
			}
			nextCheck = time.Now().Add(time.Second)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// adminAddr is where target's helper can serve the admin endpoint for this
// process: target's address on a network whose gateway is an address of
// this host (so the request stays on the local bridge); none with a remote
// engine, whose bridges this host is not on.
func (h *Harness) adminAddr(target string) (netip.AddrPort, bool) {
	if h.cfg.execFaults {
		return netip.AddrPort{}, false
	}
	s, err := h.service(target)
	if err != nil {
		return netip.AddrPort{}, false
	}
	local := map[netip.Addr]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				local[p.Addr()] = true
			}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range h.nets {
		if a, ok := s.ips[n.key]; ok && local[h.gateway[n.key]] {
			return netip.AddrPortFrom(a, toxic.AdminPort), true
		}
	}
	return netip.AddrPort{}, false
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
		if hp.admin != nil {
			hp.admin.close()
		}
		delete(h.helpers, target)
	}
	t0 := time.Now()
	addr, admin := h.adminAddr(target)
	hp, err := h.newHelper(ctx, target, s.id, addr, admin)
	if errors.Is(err, errAdminDown) {
		// The faults still apply through exec, only slower; the reason
		// goes to the log and the transcript's reader.
		h.record("fault helper of %s takes its scripts by docker exec: %v", target, err)
		hp, err = h.newHelper(ctx, target, s.id, addr, false)
	}
	if err != nil {
		return nil, err
	}
	hp.targetStart = st.StartedAt
	h.helpers[target] = hp
	h.logf("%s: fault helper for %s ready in %v (admin endpoint: %v)", h.name, target, time.Since(t0).Round(time.Millisecond), hp.admin != nil)
	return hp, nil
}

// errAdminDown marks a helper whose admin endpoint never answered.
var errAdminDown = errors.New("admin endpoint did not come up")

// newHelper creates and starts a helper in the namespace of the container
// targetID. With admin, it runs rbee-toxic serving the admin endpoint at
// addr from its first moment, so every fault script (packet-level ones
// too) goes over HTTP instead of a docker exec; without, it sleeps and
// takes scripts by exec.
func (h *Harness) newHelper(ctx context.Context, target, targetID string, addr netip.AddrPort, admin bool) (*helper, error) {
	labels := h.labels()
	labels[dockerx.LabelRole] = "fault-helper"
	labels[dockerx.LabelTarget] = target
	entry := []string{"sleep", "infinity"}
	var env []string
	var ac *adminClient
	var bin []byte
	var err error
	if admin {
		if bin, err = h.toxicBinary(ctx); err != nil {
			return nil, err
		}
		if ac, err = newAdminClient(addr); err != nil {
			return nil, err
		}
		entry = serveCommand("-admin " + addr.String())
		env = []string{toxic.TokenEnv + "=" + ac.token}
	}
	created, err := h.docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: fmt.Sprintf("%s-fault-%s-%d", h.name, target, time.Now().UnixNano()%1e6),
		Config: &container.Config{
			Image:      h.cfg.faultImage,
			Entrypoint: entry,
			Cmd:        nil,
			Env:        env,
			Labels:     labels,
		},
		HostConfig: &container.HostConfig{
			NetworkMode: container.NetworkMode("container:" + targetID),
			CapAdd:      []string{"NET_ADMIN", "NET_RAW"},
			AutoRemove:  false,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("create fault helper for %s (image %s): %w", target, h.cfg.faultImage, err)
	}
	fail := func(err error) (*helper, error) {
		_, _ = h.docker.ContainerRemove(context.WithoutCancel(ctx), created.ID, client.ContainerRemoveOptions{Force: true})
		return nil, err
	}
	if bin != nil {
		if err := h.copyToxic(ctx, created.ID, bin); err != nil {
			return fail(fmt.Errorf("fault helper for %s: %w", target, err))
		}
	}
	if _, err := h.docker.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		return fail(fmt.Errorf("start fault helper for %s: %w", target, err))
	}
	hp := &helper{id: created.ID}
	if ac != nil {
		if err := h.awaitAdmin(ctx, target, hp.id, ac); err != nil {
			return fail(err)
		}
		hp.proxy, hp.admin = true, ac
	}
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

// copyToxic puts the rbee-toxic binary into container id at toxic.BinPath
// (through the Docker API, so a remote engine works too; a created
// container that has not started takes it as well).
func (h *Harness) copyToxic(ctx context.Context, id string, bin []byte) error {
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
	if _, err := h.docker.CopyToContainer(ctx, id, client.CopyToContainerOptions{DestinationPath: "/", Content: &tb}); err != nil {
		return fmt.Errorf("copy rbee-toxic into the fault helper: %w", err)
	}
	return nil
}

// awaitAdmin waits for the admin endpoint of the helper id of target to
// answer; on failure (errAdminDown) it tells the helper's state and the end
// of rbee-toxic's log.
func (h *Harness) awaitAdmin(ctx context.Context, target, id string, ac *adminClient) error {
	running := func(ctx context.Context) error {
		ins, err := h.docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if err != nil || ins.Container.State == nil || ins.Container.State.Running {
			return nil // not known to be gone: keep waiting
		}
		return errors.New("the helper is no longer running")
	}
	err := ac.await(ctx, 30*time.Second, running)
	if err == nil {
		return nil
	}
	ac.close()
	if ctx.Err() != nil {
		return err
	}
	state := "state unknown"
	if ins, ierr := h.docker.ContainerInspect(context.WithoutCancel(ctx), id, client.ContainerInspectOptions{}); ierr == nil && ins.Container.State != nil {
		cs := ins.Container.State
		state = fmt.Sprintf("helper %s, exit code %d %s", cs.Status, cs.ExitCode, cs.Error)
	}
	tail, lerr := fileTail(context.WithoutCancel(ctx), h.docker, id, toxic.LogPath, 2000)
	if lerr != nil {
		tail = "(not readable: " + lerr.Error() + ")"
	}
	return fmt.Errorf("%w: rbee-toxic in %s's helper: %v (%s); log:\n%s", errAdminDown, target, err, strings.TrimSpace(state), tail)
}

// fileTail is the last n bytes of the file at path in container id, read
// through the archive API (a stopped container's files too, where an exec
// would fail).
func fileTail(ctx context.Context, d client.APIClient, id, path string, n int64) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var b []byte
	err := dockerx.ReadFile(ctx, d, id, path, func(r io.Reader, size int64) error {
		if size > n {
			if _, err := io.CopyN(io.Discard, r, size-n); err != nil {
				return err
			}
		}
		var err error
		b, err = io.ReadAll(io.LimitReader(r, n))
		return err
	})
	return string(b), err
}

// serveCommand runs rbee-toxic serve (with flags, if any) with its output
// appended to toxic.LogPath.
func serveCommand(flags string) []string {
	serve := toxic.BinPath + " serve"
	if flags != "" {
		serve += " " + flags
	}
	return []string{"sh", "-c", "exec " + serve + " >>" + toxic.LogPath + " 2>&1"}
}

// startProxy starts rbee-toxic, detached, in a helper that does not run it
// yet (one the admin endpoint cannot serve: a remote engine); the next
// apply waits for its control port. The caller holds faultMu.
func (h *Harness) startProxy(ctx context.Context, target string, hp *helper) error {
	t0 := time.Now()
	bin, err := h.toxicBinary(ctx)
	if err != nil {
		return err
	}
	if err := h.copyToxic(ctx, hp.id, bin); err != nil {
		return fmt.Errorf("%s: %w", target, err)
	}
	ex, err := h.docker.ExecCreate(ctx, hp.id, client.ExecCreateOptions{Cmd: serveCommand("")})
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
