package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"

	rbeeclient "github.com/rbee-dev/rbee/internal/client"
)

// CommandResult is what a command run with Exec produced.
type CommandResult struct {
	ExitCode int
	Stdout   string
	Stderr   string
}

// ExecOption changes how Exec runs a command.
type ExecOption func(*client.ExecCreateOptions)

// AsUser runs the command as user (name or uid[:gid]) instead of the image's user.
func AsUser(user string) ExecOption { return func(o *client.ExecCreateOptions) { o.User = user } }

// ExecEnv adds KEY=VALUE variables to the command's environment.
func ExecEnv(kv ...string) ExecOption {
	return func(o *client.ExecCreateOptions) { o.Env = append(o.Env, kv...) }
}

// Exec runs cmd in svc's container and returns its exit code and output.
// A non-zero exit code is not an error; failing to run the command is.
// Cancelling ctx abandons the command's output (the process may run on).
func (h *Harness) Exec(ctx context.Context, svc string, cmd []string, opts ...ExecOption) (CommandResult, error) {
	s, err := h.service(svc)
	if err != nil {
		return CommandResult{}, fmt.Errorf("exec in %s: %w", svc, err)
	}
	if len(cmd) == 0 {
		return CommandResult{}, fmt.Errorf("exec in %s: empty command", svc)
	}
	return execIn(ctx, h.docker, s.id, cmd, opts...)
}

func execIn(ctx context.Context, d client.APIClient, id string, cmd []string, opts ...ExecOption) (CommandResult, error) {
	o := client.ExecCreateOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true}
	for _, opt := range opts {
		opt(&o)
	}
	what := strings.Join(cmd, " ")
	ex, err := d.ExecCreate(ctx, id, o)
	if err != nil {
		return CommandResult{}, fmt.Errorf("exec %q: %w", what, err)
	}
	att, err := d.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return CommandResult{}, fmt.Errorf("exec %q: attach: %w", what, err)
	}
	defer att.Close()
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() { _, err := stdcopy.StdCopy(&stdout, &stderr, att.Reader); done <- err }()
	select {
	case err = <-done:
	case <-ctx.Done():
		att.Close()
		<-done
		return CommandResult{}, fmt.Errorf("exec %q: %w", what, ctx.Err())
	}
	if err != nil {
		return CommandResult{}, fmt.Errorf("exec %q: read output: %w", what, err)
	}
	ins, err := d.ExecInspect(ctx, ex.ID, client.ExecInspectOptions{})
	if err != nil {
		return CommandResult{}, fmt.Errorf("exec %q: inspect: %w", what, err)
	}
	return CommandResult{ExitCode: ins.ExitCode, Stdout: stdout.String(), Stderr: stderr.String()}, nil
}

// Logs returns svc's whole log (stdout and stderr interleaved as written).
func (h *Harness) Logs(ctx context.Context, svc string) (string, error) {
	s, err := h.service(svc)
	if err != nil {
		return "", fmt.Errorf("logs of %s: %w", svc, err)
	}
	return containerLogs(ctx, h.docker, s.id, "all")
}

func containerLogs(ctx context.Context, d client.APIClient, id, tail string) (string, error) {
	rc, err := d.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Tail: tail})
	if err != nil {
		return "", err
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, rc); err != nil && err != io.EOF {
		return buf.String(), err
	}
	return buf.String(), nil
}

// tail formats svc's last n log lines for an error message.
func (h *Harness) tail(ctx context.Context, svc string, n int) string {
	s, err := h.service(svc)
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	logs, err := containerLogs(ctx, h.docker, s.id, strconv.Itoa(n))
	if err != nil {
		return fmt.Sprintf("\n(no logs of %s: %v)", svc, err)
	}
	return fmt.Sprintf("\n--- last %d log lines of %s ---\n%s", n, svc, indent(logs))
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "    (empty)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// stopTimeout is how long Stop and Restart give a service after SIGTERM:
// PROTOCOL §1 says every program exits within 10 s.
const stopTimeout = 10

// Restart stops svc (SIGTERM, then SIGKILL after 10 s) and starts it again,
// then re-applies its active faults (iptables rules live in the container's
// network namespace, which a restart replaces). It does not wait for health:
// call WaitForHealthy. Published host ports change.
func (h *Harness) Restart(ctx context.Context, svc string) error {
	s, err := h.service(svc)
	if err != nil {
		return fmt.Errorf("restart %s: %w", svc, err)
	}
	t := stopTimeout
	if _, err := h.docker.ContainerRestart(ctx, s.id, client.ContainerRestartOptions{Timeout: &t}); err != nil {
		return fmt.Errorf("restart %s: %w", svc, err)
	}
	h.record("restart %s", svc)
	return h.afterStart(ctx, svc)
}

// StartService starts a stopped or killed svc and re-applies its active
// faults. (integration.Start brings up a whole stack for a test.)
func (h *Harness) StartService(ctx context.Context, svc string) error {
	s, err := h.service(svc)
	if err != nil {
		return fmt.Errorf("start %s: %w", svc, err)
	}
	if _, err := h.docker.ContainerStart(ctx, s.id, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("start %s: %w", svc, err)
	}
	h.record("start %s", svc)
	return h.afterStart(ctx, svc)
}

func (h *Harness) afterStart(ctx context.Context, svc string) error {
	if err := h.refresh(ctx, svc); err != nil {
		return err
	}
	if err := h.reapply(ctx, svc); err != nil {
		return fmt.Errorf("%s restarted, but its faults could not be re-applied: %w", svc, err)
	}
	return nil
}

// Stop stops svc gracefully (SIGTERM, SIGKILL after 10 s). Its faults stay
// recorded and come back with StartService.
func (h *Harness) Stop(ctx context.Context, svc string) error {
	s, err := h.service(svc)
	if err != nil {
		return fmt.Errorf("stop %s: %w", svc, err)
	}
	t := stopTimeout
	if _, err := h.docker.ContainerStop(ctx, s.id, client.ContainerStopOptions{Timeout: &t}); err != nil {
		return fmt.Errorf("stop %s: %w", svc, err)
	}
	h.record("stop %s", svc)
	return h.refresh(ctx, svc)
}

// Kill sends SIGKILL to svc's main process: a crash. The container stays
// down (restart policies are off) until Start or Restart.
func (h *Harness) Kill(ctx context.Context, svc string) error {
	return h.Signal(ctx, svc, syscall.SIGKILL)
}

// Signal sends sig to svc's main process (tini forwards it to the program).
func (h *Harness) Signal(ctx context.Context, svc string, sig syscall.Signal) error {
	s, err := h.service(svc)
	if err != nil {
		return fmt.Errorf("signal %s: %w", svc, err)
	}
	if sig <= 0 {
		return fmt.Errorf("signal %s: invalid signal %d", svc, int(sig))
	}
	if _, err := h.docker.ContainerKill(ctx, s.id, client.ContainerKillOptions{Signal: strconv.Itoa(int(sig))}); err != nil {
		return fmt.Errorf("signal %v to %s: %w", sig, svc, err)
	}
	h.record("signal %v to %s", sig, svc)
	return nil
}

// Pause freezes every process of svc (cgroup freezer): it keeps its
// connections and addresses but answers nothing, like a hung machine.
func (h *Harness) Pause(ctx context.Context, svc string) error {
	s, err := h.service(svc)
	if err != nil {
		return fmt.Errorf("pause %s: %w", svc, err)
	}
	if _, err := h.docker.ContainerPause(ctx, s.id, client.ContainerPauseOptions{}); err != nil {
		return fmt.Errorf("pause %s: %w", svc, err)
	}
	h.record("pause %s", svc)
	return nil
}

// Unpause resumes a paused svc.
func (h *Harness) Unpause(ctx context.Context, svc string) error {
	s, err := h.service(svc)
	if err != nil {
		return fmt.Errorf("unpause %s: %w", svc, err)
	}
	if _, err := h.docker.ContainerUnpause(ctx, s.id, client.ContainerUnpauseOptions{}); err != nil {
		return fmt.Errorf("unpause %s: %w", svc, err)
	}
	h.record("unpause %s", svc)
	return nil
}

// HostPort is the 127.0.0.1 port Docker published for svc's container port
// (tcp). It changes when the container restarts; the harness tracks that
// for restarts it makes.
func (h *Harness) HostPort(svc string, port int) (int, error) {
	s, err := h.service(svc)
	if err != nil {
		return 0, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	hp, ok := s.ports[port]
	if !ok {
		have := make([]string, 0, len(s.ports))
		for p := range s.ports {
			have = append(have, strconv.Itoa(p))
		}
		sort.Strings(have)
		if len(have) == 0 {
			return 0, fmt.Errorf("%s publishes no ports now (stopped?)", svc)
		}
		return 0, fmt.Errorf("%s does not publish port %d (publishes %s)", svc, port, strings.Join(have, ", "))
	}
	return hp, nil
}

// URL is "http://127.0.0.1:<host port>" for svc's container port, like
// httptest.Server.URL.
func (h *Harness) URL(svc string, port int) (string, error) {
	hp, err := h.HostPort(svc, port)
	if err != nil {
		return "", err
	}
	return "http://127.0.0.1:" + strconv.Itoa(hp), nil
}

// IP is svc's address on the topology network (what other services reach
// it at; for reaching it from the test, use URL).
func (h *Harness) IP(svc string) (string, error) {
	a, err := h.ip(svc)
	if err != nil {
		return "", err
	}
	return a.String(), nil
}

func (h *Harness) ip(svc string) (netip.Addr, error) {
	s, err := h.service(svc)
	if err != nil {
		return netip.Addr{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range h.nets {
		if a, ok := s.ips[n.key]; ok {
			return a, nil
		}
	}
	// Not started yet: the project's fixed address.
	for _, n := range h.nets {
		if sn := h.project.Services[svc].Networks[n.key]; sn != nil && sn.Ipv4Address != "" {
			return netip.ParseAddr(sn.Ipv4Address)
		}
	}
	return netip.Addr{}, fmt.Errorf("%s has no address on the topology network", svc)
}

// Queen returns the typed API client for the queen's published port 8500.
// It signs its requests with the test cluster's secret (ClusterKeyFile),
// as the queen's trusted peers do; build a client from URL for a caller
// without credentials.
func (h *Harness) Queen() (*rbeeclient.Client, error) {
	u, err := h.URL("queen", 8500)
	if err != nil {
		return nil, fmt.Errorf("queen client: %w", err)
	}
	return h.signedClient(u)
}

// Hive returns the typed API client for a hive's published port 9000,
// signing like Queen (the hive's job API requires it).
func (h *Harness) Hive(svc string) (*rbeeclient.Client, error) {
	u, err := h.URL(svc, 9000)
	if err != nil {
		return nil, fmt.Errorf("hive client: %w", err)
	}
	return h.signedClient(u)
}

// ClusterKeyFile is the test cluster's shared secret, keys/cluster.key,
// that the topologies mount into queen, hives and workers.
func (h *Harness) ClusterKeyFile() string { return filepath.Join(h.cfg.keysDir, "cluster.key") }

func (h *Harness) signedClient(u string, opts ...rbeeclient.Option) (*rbeeclient.Client, error) {
	sign, err := rbeeclient.WithKeyFile(h.ClusterKeyFile())
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w (run `go run mage.go keys`)", u, err)
	}
	return rbeeclient.New(u, append(opts, sign)...), nil
}
