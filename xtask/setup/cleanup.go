package setup

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/moby/moby/client"

	"github.com/rbee-dev/rbee/xtask/dockerx"
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
	cli, err := dockerx.Connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	var errs []error
	n, err := dockerx.RemoveByLabel(ctx, cli, dockerx.Project)
	if err != nil {
		errs = append(errs, fmt.Errorf("cleanup: %w", err))
	}
	images := 0
	if opts.Images {
		var err error
		if images, err = removeImages(ctx, cli); err != nil {
			errs = append(errs, err)
		}
	}
	cfg.logf("cleanup: removed %d containers, %d networks, %d volumes, %d images (label %s=%s)",
		n.Containers, n.Networks, n.Volumes, images, dockerx.LabelProject, dockerx.ProjectValue)
	return errors.Join(errs...)
}

// removeImages deletes labelled images, children before parents: an image
// that still has dependents fails with a conflict and is retried in the
// next pass.
func removeImages(ctx context.Context, cli client.APIClient) (int, error) {
	removed := 0
	var lastErrs []error
	for pass := 0; pass < 6; pass++ {
		list, err := cli.ImageList(ctx, client.ImageListOptions{All: true, Filters: dockerx.Filter(dockerx.Project)})
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
			case dockerx.IsNotFound(err):
				progress = true
			default:
				lastErrs = append(lastErrs, fmt.Errorf("remove image %s: %w", dockerx.Name(im.RepoTags, im.ID), err))
			}
		}
		if !progress {
			break
		}
	}
	return removed, errors.Join(lastErrs...)
}
