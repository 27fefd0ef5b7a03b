package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"
)

// errExited marks a readiness failure that waiting cannot fix.
var errExited = errors.New("container is not running")

// startAll starts every service once its depends_on conditions hold, all in
// parallel along the dependency graph, then waits until each is healthy.
// Compose's own start would poll Docker's health every 500 ms per dependency
// level; this checks the application directly (see ready) every 50 ms.
func (h *Harness) startAll(ctx context.Context) error {
	names := h.Services()
	started := map[string]chan struct{}{}
	for _, n := range names {
		started[n] = make(chan struct{})
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, n := range names {
		s, _ := h.service(n)
		g.Go(func() error {
			for dep, d := range s.deps {
				ch, ok := started[dep]
				if !ok {
					if d.Required {
						return fmt.Errorf("%s depends on unknown service %s", n, dep)
					}
					continue
				}
				select {
				case <-ch:
				case <-gctx.Done():
					return gctx.Err()
				}
				switch d.Condition {
				case types.ServiceConditionHealthy:
					if err := h.awaitReady(gctx, dep); err != nil {
						return fmt.Errorf("%s waits for %s: %w", n, dep, err)
					}
				case types.ServiceConditionCompletedSuccessfully:
					if err := h.awaitExit0(gctx, dep); err != nil {
						return fmt.Errorf("%s waits for %s: %w", n, dep, err)
					}
				}
			}
			if _, err := h.docker.ContainerStart(gctx, s.id, client.ContainerStartOptions{}); err != nil {
				return fmt.Errorf("start %s: %w", n, err)
			}
			close(started[n])
			return h.awaitReady(gctx, n)
		})
	}
	return g.Wait()
}

// WaitForExit waits until svc's container stops (after Signal, Stop, or a
// crash) and returns its exit code. A timeout ≤ 0 is an error.
func (h *Harness) WaitForExit(ctx context.Context, svc string, timeout time.Duration) (_ int, err error) {
	defer h.tl.check(fmt.Sprintf("%s exits (within %v)", svc, timeout))(&err)
	if timeout <= 0 {
		return 0, fmt.Errorf("wait for %s to exit: timeout %v must be positive", svc, timeout)
	}
	s, err := h.service(svc)
	if err != nil {
		return 0, fmt.Errorf("wait for %s to exit: %w", svc, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res := h.docker.ContainerWait(ctx, s.id, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case r := <-res.Result:
		_ = h.refresh(context.WithoutCancel(ctx), svc)
		return int(r.StatusCode), nil
	case err := <-res.Error:
		return 0, fmt.Errorf("wait for %s to exit: %w", svc, err)
	case <-ctx.Done():
		return 0, fmt.Errorf("wait for %s to exit: still running after %v", svc, timeout)
	}
}

func (h *Harness) awaitExit0(ctx context.Context, name string) error {
	s, err := h.service(name)
	if err != nil {
		return err
	}
	res := h.docker.ContainerWait(ctx, s.id, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case r := <-res.Result:
		if r.StatusCode != 0 {
			return fmt.Errorf("%s exited with %d%s", name, r.StatusCode, h.tail(ctx, name, 20))
		}
		return nil
	case err := <-res.Error:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitForHealthy polls (every 50 ms, then 200 ms) until svc is healthy or
// timeout passes. Healthy means: running, and every published port answers
// as its application — an SSH banner on 22, a status below 500 to GET
// /health elsewhere (a bare TCP connect proves nothing: docker-proxy accepts
// it before the application listens) — or, where a port is silent and the
// service has a healthcheck (compose file or image), that healthcheck
// passes. Docker's own health probes are disabled in harness
// stacks; the harness runs the same command itself while waiting. It fails
// at once, with the container's last log lines, if the container is not
// running (exited, killed, stopped). A timeout ≤ 0 is an error.
func (h *Harness) WaitForHealthy(ctx context.Context, svc string, timeout time.Duration) (err error) {
	defer h.tl.check(fmt.Sprintf("%s healthy (within %v)", svc, timeout))(&err)
	if timeout <= 0 {
		return fmt.Errorf("wait for %s: timeout %v must be positive", svc, timeout)
	}
	if _, err := h.service(svc); err != nil {
		return fmt.Errorf("wait for %s: %w", svc, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := h.awaitReady(ctx, svc); err != nil {
		return fmt.Errorf("wait for %s (%v): %w", svc, timeout, err)
	}
	return nil
}

// awaitReady polls ready until it succeeds, fails permanently, or ctx ends.
func (h *Harness) awaitReady(ctx context.Context, name string) error {
	interval := 50 * time.Millisecond
	t0 := time.Now()
	var last error
	for {
		err := h.ready(ctx, name)
		if err == nil {
			return nil
		}
		// A check cut short by the deadline saw nothing about the service:
		// report what the previous complete check saw (a paused container,
		// a silent port) rather than "context deadline exceeded".
		if last == nil || ctx.Err() == nil {
			last = err
		}
		if errors.Is(err, errExited) {
			return fmt.Errorf("%s: %w%s", name, err, h.tail(context.WithoutCancel(ctx), name, 30))
		}
		if time.Since(t0) > 2*time.Second {
			interval = 200 * time.Millisecond // long waits: spare the two CPUs
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy: %v (%w)%s", name, last, ctx.Err(), h.tail(context.WithoutCancel(ctx), name, 30))
		case <-time.After(interval):
		}
	}
}

// ready checks svc once; the error says what it saw.
func (h *Harness) ready(ctx context.Context, name string) error {
	s, err := h.service(name)
	if err != nil {
		return err
	}
	res, err := h.docker.ContainerInspect(ctx, s.id, client.ContainerInspectOptions{})
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	h.updateFromInspect(name, res) // ports vanish when it stops and change when it restarts
	st := res.Container.State
	switch {
	case st == nil:
		return errors.New("no state")
	case st.Paused:
		return errors.New("container is paused")
	case st.Restarting:
		return errors.New("container is restarting")
	case st.Status == container.StateCreated:
		return errors.New("container is created but not started")
	case !st.Running:
		return fmt.Errorf("%w: %s, exit code %d%s", errExited, st.Status, st.ExitCode, oom(st.OOMKilled))
	}
	h.mu.Lock()
	ports := make([]int, 0, len(s.ports))
	hostPorts := map[int]int{}
	for p, hp := range s.ports {
		ports = append(ports, p)
		hostPorts[p] = hp
	}
	test := h.healthTests[name] // CloneService adds entries under h.mu
	h.mu.Unlock()
	sort.Ints(ports)
	var portErr error
	for _, p := range ports {
		if err := probe(ctx, p, hostPorts[p]); err != nil {
			portErr = fmt.Errorf("port %d (127.0.0.1:%d): %v", p, hostPorts[p], err)
			break
		}
	}
	switch {
	case portErr == nil:
		return nil // every published port answered as its application (or none is published)
	case len(test) == 0:
		return portErr
	}
	// The healthcheck decides when a port does not answer: some services
	// are healthy without every port (a hive whose daemon is not
	// autostarted runs only sshd). It is an exec, 80–300 ms on a loaded
	// engine, so it runs only then.
	if err := h.healthcheck(ctx, s.id, test); err != nil {
		if portErr != nil {
			return fmt.Errorf("%v; healthcheck: %v", portErr, err)
		}
		return fmt.Errorf("healthcheck: %v", err)
	}
	return nil
}

// healthcheck runs a Docker healthcheck test (["CMD", …] or
// ["CMD-SHELL", "…"]) in the container, at most every 500 ms per container.
func (h *Harness) healthcheck(ctx context.Context, id string, test []string) error {
	h.mu.Lock()
	if h.lastCheck == nil {
		h.lastCheck = map[string]checkResult{}
	}
	if last, ok := h.lastCheck[id]; ok && time.Since(last.at) < 500*time.Millisecond {
		h.mu.Unlock()
		return last.err
	}
	h.mu.Unlock()
	err := h.runHealthcheck(ctx, id, test)
	h.mu.Lock()
	h.lastCheck[id] = checkResult{at: time.Now(), err: err}
	h.mu.Unlock()
	return err
}

// checkResult is a healthcheck's latest outcome (nil: passed).
type checkResult struct {
	at  time.Time
	err error
}

func (h *Harness) runHealthcheck(ctx context.Context, id string, test []string) error {
	var cmd []string
	switch {
	case test[0] == "CMD" && len(test) > 1:
		cmd = test[1:]
	case test[0] == "CMD-SHELL" && len(test) > 1:
		cmd = []string{"/bin/sh", "-c", test[1]}
	case test[0] == "NONE":
		return nil
	default:
		cmd = test
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := execIn(ctx, h.docker, id, cmd)
	if err != nil {
		return err
	}
	if r.ExitCode != 0 {
		out := strings.TrimSpace(r.Stdout + r.Stderr)
		if len(out) > 200 {
			out = out[:200] + "…"
		}
		return fmt.Errorf("%s exited %d: %s", strings.Join(cmd, " "), r.ExitCode, out)
	}
	return nil
}

func oom(killed bool) string {
	if killed {
		return " (OOM-killed)"
	}
	return ""
}

var probeClient = &http.Client{
	Timeout:   time.Second,
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
}

// probe checks that the application behind a published port answers: port
// 22 must send an SSH banner, any other port an HTTP response below 500 to
// GET /health.
func probe(ctx context.Context, containerPort, hostPort int) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(hostPort))
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if containerPort == 22 {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			return fmt.Errorf("no SSH banner: %w", err)
		}
		if !strings.HasPrefix(line, "SSH-") {
			return fmt.Errorf("not an SSH banner: %q", line)
		}
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("GET /health: %s", resp.Status)
	}
	return nil
}
