package integration

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/rbee-dev/rbee/xtask/capture"
	"github.com/rbee-dev/rbee/xtask/dockerx"
)

// CaptureEnv selects packet capture: "on" (the default: a failed test's
// artifacts get capture.pcap), "always" (a passing test's too) or "off".
const CaptureEnv = "RBEE_CAPTURE"

// Capture modes (CaptureEnv, WithCapture).
const (
	CaptureOn     = "on"
	CaptureAlways = "always"
	CaptureOff    = "off"
)

// CaptureLimit bounds a run's capture: the newest packets whose pcap
// records fit in it are kept, older ones dropped.
const CaptureLimit = 16 << 20

// CaptureSnaplen is how many bytes of each packet the capture keeps.
const CaptureSnaplen = 65535

// CaptureFile is the capture's name in a test's artifacts directory.
const CaptureFile = "capture.pcap"

const captureBin = "/usr/local/bin/rbee-capture"

// CaptureStats are a capture's counters when it was written.
type CaptureStats = capture.Stats

var errCaptureOff = errors.New("capture is off (" + CaptureEnv + "=off)")

// captureRun is the packet capture of one run: build/bin/rbee-capture in a
// helper container on the Docker host's network namespace (network mode
// host, NET_RAW and NET_ADMIN), reading this run's bridges in promiscuous
// mode. It sees every frame on the run's networks and nothing of other
// networks: each run has bridges of its own.
type captureRun struct {
	mode   string
	done   chan struct{} // closed when the start has finished, with or without success
	id     string        // helper container; "" when none was created
	ifaces []string      // bridges captured
	err    error         // why there is no capture (errCaptureOff when off)
}

// WithCapture sets the capture mode of this harness (CaptureOn,
// CaptureAlways, CaptureOff), over CaptureEnv.
func WithCapture(mode string) Option {
	return func(c *config) error {
		if _, err := parseCaptureMode(mode, "WithCapture"); err != nil {
			return err
		}
		c.capture = mode
		return nil
	}
}

func parseCaptureMode(v, from string) (string, error) {
	switch v {
	case "", CaptureOn:
		return CaptureOn, nil
	case CaptureAlways, CaptureOff:
		return v, nil
	}
	return "", fmt.Errorf("%s=%q: want %s, %s or %s", from, v, CaptureOn, CaptureAlways, CaptureOff)
}

// startCapture starts the run's capture in the background once its
// networks exist; awaitCapture waits for it before the first container
// starts, so the capture holds the run's traffic from its first packet.
// Only a bad CaptureEnv is an error: a capture that cannot start is logged
// and the run goes on without one (its artifacts then say why).
func (h *Harness) startCapture(ctx context.Context) error {
	mode := h.cfg.capture
	if mode == "" {
		var err error
		if mode, err = parseCaptureMode(os.Getenv(CaptureEnv), CaptureEnv); err != nil {
			return err
		}
	}
	c := &captureRun{mode: mode, done: make(chan struct{})}
	h.capture = c
	// Up's stacks outlive the process: no test collects their capture.
	if mode == CaptureOff || h.cfg.keep {
		c.err = errCaptureOff
		close(c.done)
		return nil
	}
	go func() {
		defer close(c.done)
		c.id, c.ifaces, c.err = h.runCapture(ctx)
	}()
	return nil
}

// awaitCapture waits until the capture is reading or has failed.
func (h *Harness) awaitCapture(ctx context.Context) {
	c := h.capture
	if c == nil {
		return
	}
	t0 := time.Now()
	select {
	case <-c.done:
	case <-ctx.Done():
		return // New fails on ctx anyway; Close waits for the start to end
	}
	switch {
	case c.err == nil:
		h.logf("%s: capturing %s (waited %v for it after create)", h.name, strings.Join(c.ifaces, ", "), time.Since(t0).Round(time.Millisecond))
	case !errors.Is(c.err, errCaptureOff):
		h.logf("%s: no packet capture for this run: %v", h.name, c.err)
	}
}

// settleCapture waits (within ctx) until a capture start still under way
// has ended, so that Close's sweep sees its helper container.
func (h *Harness) settleCapture(ctx context.Context) {
	if c := h.capture; c != nil {
		select {
		case <-c.done:
		case <-ctx.Done():
		}
	}
}

// bridges names the Linux bridge of each of the run's networks:
// com.docker.network.bridge.name when set, else br-<first 12 of the id>.
func (h *Harness) bridges(ctx context.Context) ([]string, error) {
	var out []string
	for _, pn := range h.nets {
		res, err := h.docker.NetworkInspect(ctx, pn.name, client.NetworkInspectOptions{})
		if err != nil {
			return nil, fmt.Errorf("inspect network %s: %w", pn.name, err)
		}
		n := res.Network
		if br := n.Options["com.docker.network.bridge.name"]; br != "" {
			out = append(out, br)
		} else if len(n.ID) >= 12 {
			out = append(out, "br-"+n.ID[:12])
		} else {
			return nil, fmt.Errorf("network %s: id %q is too short to name its bridge", pn.name, n.ID)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("the run has no network of its own to capture")
	}
	return out, nil
}

// runCapture creates the helper, copies the program in (CopyToContainer, so
// a remote DOCKER_HOST works too), starts it and waits for its "capturing"
// line. It returns the helper's id even on error, for Close to remove.
func (h *Harness) runCapture(ctx context.Context) (string, []string, error) {
	binPath := filepath.Join(h.repoDir, "build", "bin", "rbee-capture")
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return "", nil, fmt.Errorf("%w (run `go run mage.go build`)", err)
	}
	ifaces, err := h.bridges(ctx)
	if err != nil {
		return "", nil, err
	}
	labels := h.labels()
	labels[dockerx.LabelRole] = "capture"
	labels[dockerx.LabelTarget] = strings.Join(ifaces, ",")
	cmd := []string{"-limit", fmt.Sprint(CaptureLimit), "-snaplen", fmt.Sprint(CaptureSnaplen)}
	created, err := h.docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: h.name + "-capture",
		Config: &container.Config{
			Image:      h.cfg.faultImage,
			Entrypoint: []string{captureBin},
			Cmd:        append(cmd, ifaces...),
			Labels:     labels,
		},
		HostConfig: &container.HostConfig{
			NetworkMode: "host",
			CapAdd:      []string{"NET_RAW", "NET_ADMIN"},
		},
	})
	if err != nil {
		return "", nil, fmt.Errorf("create capture helper (image %s): %w", h.cfg.faultImage, err)
	}
	id := created.ID
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	hdr := &tar.Header{Name: filepath.Base(captureBin), Mode: 0o755, Size: int64(len(bin)), ModTime: time.Now()}
	if err := tw.WriteHeader(hdr); err != nil {
		return id, nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return id, nil, err
	}
	if err := tw.Close(); err != nil {
		return id, nil, err
	}
	if _, err := h.docker.CopyToContainer(ctx, id, client.CopyToContainerOptions{DestinationPath: filepath.Dir(captureBin), Content: &tb}); err != nil {
		return id, nil, fmt.Errorf("copy rbee-capture into its helper: %w", err)
	}
	if _, err := h.docker.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		return id, nil, fmt.Errorf("start capture helper: %w", err)
	}
	// The log from the start on: the line cannot be missed however late
	// this reads it.
	rc, err := h.docker.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Follow: true})
	if err != nil {
		return id, nil, fmt.Errorf("capture helper logs: %w", err)
	}
	defer rc.Close()
	pr, pw := io.Pipe()
	go func() { _, err := stdcopy.StdCopy(pw, pw, rc); pw.CloseWithError(err) }()
	defer pr.Close()
	var seen []string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "rbee-capture: capturing on ") {
			return id, ifaces, nil
		}
		seen = append(seen, line)
	}
	err = sc.Err()
	if err == nil {
		err = errors.New("it exited")
	}
	return id, nil, fmt.Errorf("capture helper did not start capturing: %v: %s", err, strings.Join(seen, "; "))
}

// WriteCapture writes the run's capture so far to path as a pcap file
// (Ethernet, microsecond timestamps; tcpdump -r and Wireshark open it) and
// returns its counters. It fails when the run has no capture.
func (h *Harness) WriteCapture(ctx context.Context, path string) (CaptureStats, error) {
	c := h.capture
	if c == nil {
		return CaptureStats{}, errors.New("write capture: the harness was not started")
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		return CaptureStats{}, fmt.Errorf("write capture: %w", ctx.Err())
	}
	if c.err != nil {
		return CaptureStats{}, fmt.Errorf("write capture: no capture: %w", c.err)
	}
	part := path + ".part"
	f, err := os.Create(part)
	if err != nil {
		return CaptureStats{}, fmt.Errorf("write capture: %w", err)
	}
	defer os.Remove(part) // after the rename: a no-op
	st, err := h.dumpCapture(ctx, c.id, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(part, path)
	}
	if err != nil {
		return CaptureStats{}, fmt.Errorf("write capture %s: %w", path, err)
	}
	return st, nil
}

// dumpCapture runs `rbee-capture dump` in the helper: the pcap on stdout,
// the counters as one JSON line on stderr.
func (h *Harness) dumpCapture(ctx context.Context, id string, w io.Writer) (CaptureStats, error) {
	ex, err := h.docker.ExecCreate(ctx, id, client.ExecCreateOptions{Cmd: []string{captureBin, "dump"}, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return CaptureStats{}, fmt.Errorf("exec dump: %w", err)
	}
	att, err := h.docker.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return CaptureStats{}, fmt.Errorf("exec dump: attach: %w", err)
	}
	defer att.Close()
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() { _, err := stdcopy.StdCopy(w, &stderr, att.Reader); done <- err }()
	select {
	case err = <-done:
	case <-ctx.Done():
		att.Close()
		<-done
		return CaptureStats{}, fmt.Errorf("exec dump: %w", ctx.Err())
	}
	if err != nil {
		return CaptureStats{}, fmt.Errorf("exec dump: read: %w", err)
	}
	ins, err := h.docker.ExecInspect(ctx, ex.ID, client.ExecInspectOptions{})
	if err != nil {
		return CaptureStats{}, fmt.Errorf("exec dump: inspect: %w", err)
	}
	if ins.ExitCode != 0 {
		return CaptureStats{}, fmt.Errorf("dump exited %d: %s", ins.ExitCode, strings.TrimSpace(stderr.String()))
	}
	var st CaptureStats
	if err := json.Unmarshal(bytes.TrimSpace(stderr.Bytes()), &st); err != nil {
		return CaptureStats{}, fmt.Errorf("dump counters %q: %w", stderr.String(), err)
	}
	return st, nil
}

// captureArtifact writes capture.pcap into dir and returns its summary line.
func (h *Harness) captureArtifact(ctx context.Context, dir string) (string, error) {
	if c := h.capture; c != nil && errors.Is(c.err, errCaptureOff) {
		return "capture: off\n", nil
	}
	path := filepath.Join(dir, CaptureFile)
	st, err := h.WriteCapture(ctx, path)
	if err != nil {
		return fmt.Sprintf("capture: none: %v\n", err), err
	}
	ifaces := ""
	if h.capture != nil {
		ifaces = strings.Join(h.capture.ifaces, ",")
	}
	return fmt.Sprintf("capture: %s (%s: %d packets, %d bytes; %d older dropped by the %d MiB ring, %d by the kernel; open with tcpdump -r or Wireshark)\n",
		path, ifaces, st.Packets, st.Bytes, st.Dropped, CaptureLimit>>20, st.KernelDropped), nil
}

// captureOnPass keeps a passing test's capture in its artifacts directory
// when the mode is CaptureAlways.
func (h *Harness) captureOnPass(t testing.TB) {
	if c := h.capture; c == nil || c.mode != CaptureAlways || h.docker == nil {
		return
	}
	dir := ArtifactsDir(h.repoDir, t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("capture: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	line, err := h.captureArtifact(ctx, dir)
	t.Log(strings.TrimSpace(line))
	if err != nil {
		t.Errorf("%s=%s: %v", CaptureEnv, CaptureAlways, err)
	}
}
