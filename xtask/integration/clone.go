package integration

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/compose/v5/pkg/api"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// CloneService starts one more container like svc's under the new service
// name name, on the running stack: same image, command, environment, mounts
// and networks, with hostname and DNS alias name, a free address instead of
// svc's fixed one, its own ephemeral 127.0.0.1 ports, and every environment
// value that equals svc's name renamed (RBEE_WORKER_ID=worker-1 becomes
// worker-3). It carries this run's labels, so Close removes it, and every
// Harness method (Kill, URL, Exec, faults …) accepts name afterwards. It
// returns once the clone is healthy (WaitForHealthy's rules, within
// timeout).
//
// The heartbeat suite uses it for "many standalone workers" without a
// compose file per worker count, as MultiHiveN does for hives.
func (h *Harness) CloneService(ctx context.Context, svc, name string, timeout time.Duration) error {
	if timeout <= 0 {
		return fmt.Errorf("clone %s as %s: timeout %v must be positive", svc, name, timeout)
	}
	if sanitize(name) != name || name == "" {
		return fmt.Errorf("clone %s as %q: a service name is lower-case letters, digits and '-'", svc, name)
	}
	src, err := h.service(svc)
	if err != nil {
		return fmt.Errorf("clone %s as %s: %w", svc, name, err)
	}
	if _, err := h.service(name); err == nil {
		return fmt.Errorf("clone %s as %s: service %s already exists", svc, name, name)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := h.docker.ContainerInspect(ctx, src.id, client.ContainerInspectOptions{})
	if err != nil {
		return fmt.Errorf("clone %s as %s: inspect: %w", svc, name, err)
	}
	c := res.Container
	if c.Config == nil || c.HostConfig == nil || c.NetworkSettings == nil {
		return fmt.Errorf("clone %s as %s: incomplete inspect data", svc, name)
	}
	cfg := *c.Config
	cfg.Hostname = name
	cfg.Env = renameEnv(c.Config.Env, svc, name)
	cfg.Labels = maps.Clone(c.Config.Labels)
	cfg.Labels[api.ServiceLabel] = name
	cfg.Labels[api.ContainerNumberLabel] = "1"
	hc := *c.HostConfig
	hc.PortBindings = network.PortMap{}
	for p := range c.HostConfig.PortBindings {
		hc.PortBindings[p] = []network.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1")}} // ephemeral
	}
	eps := map[string]*network.EndpointSettings{}
	for net, ep := range c.NetworkSettings.Networks {
		if ep == nil {
			continue
		}
		// No IPAMConfig: Docker picks a free address in the run's subnet.
		eps[net] = &network.EndpointSettings{NetworkID: ep.NetworkID, Aliases: []string{name}}
	}
	created, err := h.docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config:           &cfg,
		HostConfig:       &hc,
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: eps},
		Name:             h.name + "-" + name + "-1",
	})
	if err != nil {
		return fmt.Errorf("clone %s as %s: create: %w", svc, name, err)
	}
	h.mu.Lock()
	h.services[name] = &service{name: name, id: created.ID}
	if test, ok := h.healthTests[svc]; ok {
		h.healthTests[name] = slices.Clone(test)
	}
	h.mu.Unlock()
	if _, err := h.docker.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("clone %s as %s: start: %w", svc, name, err)
	}
	h.record("clone %s as %s", svc, name)
	if err := h.awaitReady(ctx, name); err != nil {
		return fmt.Errorf("clone %s as %s: %w", svc, name, err)
	}
	return nil
}

// renameEnv copies env (KEY=VALUE), replacing values equal to from by to.
func renameEnv(env []string, from, to string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && v == from {
			kv = k + "=" + to
		}
		out = append(out, kv)
	}
	return out
}

// MustCloneService is CloneService that fails the test on error.
func (h *Harness) MustCloneService(t testing.TB, svc, name string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := mustCtx(t)
	defer cancel()
	if err := h.CloneService(ctx, svc, name, timeout); err != nil {
		t.Fatal(err)
	}
}
