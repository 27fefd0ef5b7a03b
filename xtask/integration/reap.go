package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }

func randInt() int { return rand.IntN(1 << 30) }

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}

// procStart is the process's start time in clock ticks since boot (field 22
// of /proc/PID/stat): with the pid it identifies a process even after the
// pid is reused. "" where /proc is unavailable.
func procStart(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	// The command name (field 2) may contain spaces; fields after ')' are plain.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19] // field 22 overall
}

// ownerGone reports whether the process that labelled a resource is dead:
// same host, and no process with that pid and start time exists.
func ownerGone(labels map[string]string) bool {
	if labels[LabelKeep] == "1" {
		return false
	}
	if labels[LabelOwnerHost] != hostname() {
		return false // another machine's run (shared DOCKER_HOST): not ours to judge
	}
	pid, err := strconv.Atoi(labels[LabelOwnerPID])
	if err != nil || pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return true
	}
	start := labels[LabelOwnerStart]
	return start != "" && procStart(pid) != "" && procStart(pid) != start
}

// reap removes the resources of runs whose owner process is gone (a test
// binary killed with SIGKILL never ran its cleanup). Runs marked kept
// (LabelKeep, or a keep-marker volume) are left alone. It returns how many
// runs it removed.
func reap(ctx context.Context, d client.APIClient) (int, error) {
	mine := make(client.Filters).Add("label", LabelProject+"="+ProjectValue)
	runs := map[string]bool{} // run → reapable
	note := func(labels map[string]string) {
		run := labels[LabelRun]
		if run == "" {
			return // a project resource that is not a harness run (images, manual compose)
		}
		gone := ownerGone(labels)
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
		if v.Labels[LabelRole] == "keep-marker" {
			runs[v.Labels[LabelRun]] = false
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
	d, _, err := connect(ctx)
	if err != nil {
		return 0, err
	}
	return reap(ctx, d)
}

// forceRemove kills and removes containers in parallel, with their
// anonymous volumes; "not found" is success (someone else was quicker).
func forceRemove(ctx context.Context, d client.APIClient, items []container.Summary, errs *[]error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, c := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := d.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			if err != nil && !isNotFound(err) && !strings.Contains(err.Error(), "already in progress") {
				mu.Lock()
				*errs = append(*errs, fmt.Errorf("remove container %s: %w", strings.Join(c.Names, ","), err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}
