package setup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// CleanupOptions says what Cleanup removes besides containers, networks and
// volumes.
type CleanupOptions struct {
	Images bool // also remove the project's images (the next setup rebuilds them)
}

// Cleanup removes every container, network and volume (and with
// opts.Images every image) that carries dev.rbee.project=rbee-netest,
// and nothing else.
func Cleanup(ctx context.Context, cfg Config, opts CleanupOptions) error {
	cli, err := Connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	var errs []error
	counts := map[string]int{}

	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: projectFilter()})
	if err != nil {
		return fmt.Errorf("cleanup: list containers: %w", err)
	}
	// Kill and wait before removing: dockerd 20.10 can panic when a health
	// probe's exec races a forced removal of a running container.
	for _, c := range cs.Items {
		if c.State == "running" || c.State == "paused" {
			if c.State == "paused" {
				_, _ = cli.ContainerUnpause(ctx, c.ID, client.ContainerUnpauseOptions{})
			}
			_, _ = cli.ContainerKill(ctx, c.ID, client.ContainerKillOptions{Signal: "KILL"})
			wr := cli.ContainerWait(ctx, c.ID, client.ContainerWaitOptions{Condition: "not-running"})
			select {
			case <-wr.Result:
			case <-wr.Error:
			case <-ctx.Done():
			}
		}
	}
	for _, c := range cs.Items {
		if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("remove container %s: %w", name(c.Names, c.ID), err))
			continue
		}
		counts["containers"]++
	}

	ns, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: projectFilter()})
	if err != nil {
		return fmt.Errorf("cleanup: list networks: %w", err)
	}
	for _, n := range ns.Items {
		if _, err := cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("remove network %s: %w", n.Name, err))
			continue
		}
		counts["networks"]++
	}

	vs, err := cli.VolumeList(ctx, client.VolumeListOptions{Filters: projectFilter()})
	if err != nil {
		return fmt.Errorf("cleanup: list volumes: %w", err)
	}
	for _, v := range vs.Items {
		if _, err := cli.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{Force: true}); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("remove volume %s: %w", v.Name, err))
			continue
		}
		counts["volumes"]++
	}

	if opts.Images {
		n, err := removeImages(ctx, cli)
		counts["images"] = n
		if err != nil {
			errs = append(errs, err)
		}
	}
	cfg.logf("cleanup: removed %d containers, %d networks, %d volumes, %d images (label %s=%s)",
		counts["containers"], counts["networks"], counts["volumes"], counts["images"], ProjectLabel, ProjectValue)
	return errors.Join(errs...)
}

// removeImages deletes labelled images, children before parents: an image
// that still has dependents fails with a conflict and is retried in the
// next pass.
func removeImages(ctx context.Context, cli *client.Client) (int, error) {
	removed := 0
	var lastErrs []error
	for pass := 0; pass < 6; pass++ {
		list, err := cli.ImageList(ctx, client.ImageListOptions{All: true, Filters: projectFilter()})
		if err != nil {
			return removed, fmt.Errorf("cleanup: list images: %w", err)
		}
		if len(list.Items) == 0 {
			return removed, nil
		}
		// Newest first: derived images are newer than what they build on.
		items := list.Items
		sort.Slice(items, func(i, j int) bool { return items[i].Created > items[j].Created })
		lastErrs = nil
		progress := false
		for _, im := range items {
			_, err := cli.ImageRemove(ctx, im.ID, client.ImageRemoveOptions{Force: true, PruneChildren: true})
			switch {
			case err == nil:
				removed++
				progress = true
			case isNotFound(err):
				progress = true
			default:
				lastErrs = append(lastErrs, fmt.Errorf("remove image %s: %w", name(im.RepoTags, im.ID), err))
			}
		}
		if !progress {
			break
		}
	}
	return removed, errors.Join(lastErrs...)
}

func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }

func name(names []string, id string) string {
	if len(names) > 0 {
		return strings.TrimPrefix(names[0], "/")
	}
	if len(id) > 19 {
		return id[:19]
	}
	return id
}
