package integration

import (
	"context"
	"errors"
	"fmt"

	"github.com/moby/moby/client"

	"github.com/rbee-dev/rbee/xtask/dockerx"
)

// reap removes the resources of runs whose owner process is gone (a test
// binary killed with SIGKILL never ran its cleanup). Runs marked kept
// (dockerx.LabelKeep, or a keep-marker volume) are left alone. It returns how many
// runs it removed.
func reap(ctx context.Context, d client.APIClient) (int, error) {
	mine := dockerx.Filter(dockerx.Project)
	runs := map[string]bool{} // run → reapable
	note := func(labels map[string]string) {
		run := labels[dockerx.LabelRun]
		if run == "" {
			return // a project resource that is not a harness run (images, manual compose)
		}
		gone := dockerx.OwnerGone(labels)
		if prev, seen := runs[run]; seen {
			runs[run] = prev && gone
		} else {
			runs[run] = gone
		}
	}
	cs, err := d.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: mine})
	if err != nil {
		return 0, fmt.Errorf("list containers: %w", err)
	}
	for _, c := range cs.Items {
		note(c.Labels)
	}
	ns, err := d.NetworkList(ctx, client.NetworkListOptions{Filters: mine})
	if err != nil {
		return 0, fmt.Errorf("list networks: %w", err)
	}
	for _, n := range ns.Items {
		note(n.Labels)
	}
	vs, err := d.VolumeList(ctx, client.VolumeListOptions{Filters: mine})
	if err != nil {
		return 0, fmt.Errorf("list volumes: %w", err)
	}
	for _, v := range vs.Items {
		note(v.Labels)
		if v.Labels[dockerx.LabelRole] == "keep-marker" {
			runs[v.Labels[dockerx.LabelRun]] = false
		}
	}
	var errs []error
	n := 0
	for run, gone := range runs {
		if !gone {
			continue
		}
		if err := removeRun(ctx, d, nil, run); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// Reap removes what killed harness runs left behind (New does it too). It
// returns the number of runs removed. Mage's cleanup may call it.
func Reap(ctx context.Context) (int, error) {
	d, err := dockerx.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	return reap(ctx, d)
}
