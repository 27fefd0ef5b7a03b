package integration

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/docker/compose/v5/pkg/api"
	"github.com/moby/moby/client"

	"github.com/rbee-dev/rbee/xtask/dockerx"
)

// Up brings topo up under the project name sanitize(name) and keeps it after
// the process exits (label dev.rbee.keep=1: the reaper leaves it alone), for
// poking at by hand; Mage's env:up calls it. It returns a description of the
// stack: services with their URLs and how to remove it (Down).
func Up(ctx context.Context, topo Topology, name string, opts ...Option) (string, error) {
	cfg := defaultConfig()
	cfg.name = name
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			return "", err
		}
	}
	cfg.keep = true
	project := sanitize(name)
	if project == "" {
		return "", fmt.Errorf("up: name %q has no usable characters", name)
	}
	d, _, err := connect(ctx)
	if err != nil {
		return "", err
	}
	res, err := d.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", api.ProjectLabel+"="+project)})
	if err != nil {
		return "", err
	}
	if len(res.Items) > 0 {
		return "", fmt.Errorf("up: a stack named %s exists: `go run mage.go env:down %s` first", project, project)
	}
	h, err := newHarness(ctx, topo, cfg, project)
	if err != nil {
		if h != nil {
			dir := ArtifactsDir(h.repoDir, "env-up-"+project)
			sum, _ := h.CollectArtifacts(ctx, dir, 20)
			_ = h.Close(ctx)
			return "", fmt.Errorf("%w\n%s", err, sum)
		}
		return "", err
	}
	return h.describe(), nil
}

func (h *Harness) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "stack %s (%s), subnet %s\n", h.name, h.topo, h.subnets())
	for _, n := range h.Services() {
		ip, _ := h.IP(n)
		s, _ := h.service(n)
		h.mu.Lock()
		var ports []string
		for p, hp := range s.ports {
			ports = append(ports, fmt.Sprintf("%d→127.0.0.1:%d", p, hp))
		}
		h.mu.Unlock()
		sort.Strings(ports)
		fmt.Fprintf(&b, "  %-16s %-15s %s\n", n, ip, strings.Join(ports, " "))
	}
	fmt.Fprintf(&b, "remove with: go run mage.go env:down %s", h.name)
	return b.String()
}

// Down removes the stack whose compose project name is name (as Up or a kept
// failed test printed it): containers, networks, volumes, generated files.
// Removing a stack that does not exist is not an error.
func Down(ctx context.Context, name string) error {
	if name == "" {
		return fmt.Errorf("down: empty stack name")
	}
	d, c, err := connect(ctx)
	if err != nil {
		return err
	}
	return removeRun(ctx, d, c, name)
}

// Keep marks this harness's stack as kept: the reaper of later runs leaves
// it alone, and Close is no longer needed (or wanted). It returns the line
// that says how to remove it. RBEE_KEEP_FAILED=1 makes Start call it for a
// failed test.
func (h *Harness) Keep(ctx context.Context) (string, error) {
	labels := h.labels()
	labels[dockerx.LabelRole] = "keep-marker"
	labels[dockerx.LabelKeep] = "1"
	if _, err := h.docker.VolumeCreate(ctx, client.VolumeCreateOptions{Name: h.name + "_kept", Labels: labels}); err != nil {
		return "", fmt.Errorf("keep %s: %w", h.name, err)
	}
	h.mu.Lock()
	h.closed = true // the stack is the person's now
	h.mu.Unlock()
	untrack(h.name)
	return fmt.Sprintf("kept stack %s (RBEE_KEEP_FAILED=1): inspect with `docker compose -p %s ps`, remove with `go run mage.go env:down %s`", h.name, h.name, h.name), nil
}
