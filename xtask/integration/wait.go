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
// Compose's own start would poll health every 500 ms per dependency level;
// this checks the application directly (see ready) every 50 ms.
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

// WaitForHealthy polls until svc is healthy or timeout passes. Healthy means
// running and either Docker reports its healthcheck healthy, or every
// published port answers at the application level (an HTTP response, or an
// SSH banner on port 22: a bare TCP connect proves nothing, docker-proxy
// accepts it before the application listens). It fails at once, with the
// container's last log lines, if the container is not running (exited,
// killed, stopped). A timeout ≤ 0 is an error.
func (h *Harness) WaitForHealthy(ctx context.Context, svc string, timeout time.Duration) error {
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
		last = h.ready(ctx, name)
		if last == nil {
			return nil
		}
		if errors.Is(last, errExited) {
			return fmt.Errorf("%s: %w%s", name, last, h.tail(context.WithoutCancel(ctx), name, 30))
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
	if st.Health != nil && st.Health.Status == container.Healthy {
		return nil
	}
	h.mu.Lock()
	ports := make([]int, 0, len(s.ports))
	hostPorts := map[int]int{}
	for p, hp := range s.ports {
		ports = append(ports, p)
		hostPorts[p] = hp
	}
	h.mu.Unlock()
	sort.Ints(ports)
	if len(ports) == 0 {
		if st.Health == nil {
			return nil // running, nothing to probe, no healthcheck: as ready as it gets
		}
		return fmt.Errorf("health %s%s", st.Health.Status, lastHealth(st.Health))
	}
	for _, p := range ports {
		if err := probe(ctx, p, hostPorts[p]); err != nil {
			health := ""
			if st.Health != nil {
				health = fmt.Sprintf("; health %s%s", st.Health.Status, lastHealth(st.Health))
			}
			return fmt.Errorf("port %d (127.0.0.1:%d): %v%s", p, hostPorts[p], err, health)
		}
	}
	return nil
}

func oom(killed bool) string {
	if killed {
		return " (OOM-killed)"
	}
	return ""
}

func lastHealth(hl *container.Health) string {
	if len(hl.Log) == 0 {
		return ""
	}
	out := strings.TrimSpace(hl.Log[len(hl.Log)-1].Output)
	if len(out) > 200 {
		out = out[:200] + "…"
	}
	if out == "" {
		return ""
	}
	return " (last check: " + out + ")"
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
