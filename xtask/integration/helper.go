package integration

import (
	"context"
	"fmt"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/rbee-dev/rbee/xtask/dockerx"
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
