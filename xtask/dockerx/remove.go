package dockerx

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// Removed counts what RemoveByLabel removed.
type Removed struct{ Containers, Networks, Volumes int }

// RemoveByLabel removes every container (with its anonymous volumes),
// network and volume that carries all of the given "key=value" labels, and
// nothing else. Running containers are stopped first (StopByLabel). A
// resource someone else removed meanwhile counts as removed.
func RemoveByLabel(ctx context.Context, d client.APIClient, labels ...string) (Removed, error) {
	var n Removed
	var errs []error
	f := Filter(labels...)
	if err := StopByLabel(ctx, d, labels...); err != nil {
		errs = append(errs, err)
	}
	cs, err := d.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return n, fmt.Errorf("list containers: %w", err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, c := range cs.Items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := d.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			mu.Lock()
			defer mu.Unlock()
			if err != nil && !IsNotFound(err) && !strings.Contains(err.Error(), "already in progress") {
				errs = append(errs, fmt.Errorf("remove container %s: %w", Name(c.Names, c.ID), err))
				return
			}
			n.Containers++
		}()
	}
	wg.Wait()
	ns, err := d.NetworkList(ctx, client.NetworkListOptions{Filters: f})
	if err != nil {
		return n, errors.Join(append(errs, fmt.Errorf("list networks: %w", err))...)
	}
	for _, nw := range ns.Items {
		if _, err := d.NetworkRemove(ctx, nw.ID, client.NetworkRemoveOptions{}); err != nil && !IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove network %s: %w", nw.Name, err))
			continue
		}
		n.Networks++
	}
	vs, err := d.VolumeList(ctx, client.VolumeListOptions{Filters: f})
	if err != nil {
		return n, errors.Join(append(errs, fmt.Errorf("list volumes: %w", err))...)
	}
	for _, v := range vs.Items {
		if _, err := d.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{Force: true}); err != nil && !IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove volume %s: %w", v.Name, err))
			continue
		}
		n.Volumes++
	}
	return n, errors.Join(errs...)
}

// StopByLabel kills the running (or paused) containers that carry all of
// the given labels and waits until they no longer run, in parallel.
// A container is never removed while it still runs: dockerd 20.10 can panic
// when a health probe's exec races a forced removal (seen on the harness's
// Close), which is also why harness stacks run without Docker's probes.
func StopByLabel(ctx context.Context, d client.APIClient, labels ...string) error {
	res, err := d.ContainerList(ctx, client.ContainerListOptions{Filters: Filter(labels...)})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	var wg sync.WaitGroup
	for _, c := range res.Items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c.State == container.StatePaused {
				_, _ = d.ContainerUnpause(ctx, c.ID, client.ContainerUnpauseOptions{})
			}
			if _, err := d.ContainerKill(ctx, c.ID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
				return // already stopped or gone
			}
			w := d.ContainerWait(ctx, c.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
			select {
			case <-w.Result:
			case <-w.Error:
			case <-ctx.Done():
			}
		}()
	}
	wg.Wait()
	return nil
}

// IsNotFound reports whether err is the engine's "no such object".
func IsNotFound(err error) bool { return cerrdefs.IsNotFound(err) }

// Name is how an object is named in messages: its first name without the
// leading slash, else its short id.
func Name(names []string, id string) string {
	if len(names) > 0 {
		return strings.TrimPrefix(names[0], "/")
	}
	if len(id) > 19 {
		return id[:19]
	}
	return id
}
