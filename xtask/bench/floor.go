package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/rbee-dev/rbee/xtask/dockerx"
	"github.com/rbee-dev/rbee/xtask/integration"
)

// FloorRun is one raw-SDK bring-up: what the engine itself needs to serve
// a topology's containers, with nothing of the harness around it.
type FloorRun struct {
	Up, Down time.Duration
}

// Floor measures the raw-SDK floor of topo's bring-up: with the compose
// file already loaded and a Docker client already connected (both outside
// the clock), it creates the network, creates and starts every container in
// parallel (same images, binds, environment, addresses; ephemeral ports),
// and stops the clock when every published HTTP port answers GET /health
// for the first time. Teardown (kill, remove, network) is timed apart.
// Everything carries the project and owner labels, so a crash leaves
// nothing the reaper and the leftover count do not see.
func Floor(ctx context.Context, root string, topo integration.Topology, run int, rng *rand.Rand) (FloorRun, error) {
	var fr FloorRun
	file := filepath.Join(root, filepath.FromSlash(topo.File()))
	content, err := os.ReadFile(file)
	if err != nil {
		return fr, err
	}
	d, err := dockerx.Connect(ctx)
	if err != nil {
		return fr, err
	}
	defer d.Close()
	used, err := dockerx.UsedSubnets(ctx, d)
	if err != nil {
		return fr, err
	}
	subnet, err := PickSubnet(used, rng)
	if err != nil {
		return fr, err
	}
	env, err := ComposeEnv(string(content), subnet)
	if err != nil {
		return fr, err
	}
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	name := fmt.Sprintf("rbee-bench-floor-%s-%d-%06x", topo, run, rng.IntN(1<<24))
	opts, err := cli.NewProjectOptions([]string{file}, cli.WithWorkingDirectory(filepath.Dir(file)), cli.WithEnv(envList), cli.WithOsEnv, cli.WithName(name))
	if err != nil {
		return fr, err
	}
	p, err := opts.LoadProject(ctx)
	if err != nil {
		return fr, fmt.Errorf("load %s: %w", file, err)
	}
	// The full owner labels (pid, host, start time): with the pid alone the
	// reaper cannot tell the owner is gone and would never remove them.
	labels := dockerx.OwnerLabels()
	labels[dockerx.LabelProject], labels[dockerx.LabelRun] = dockerx.ProjectValue, name
	var ids []string
	var mu sync.Mutex
	defer func() { // untimed on error; timed below on success
		if fr.Down == 0 {
			floorDown(context.WithoutCancel(ctx), d, name, ids)
		}
	}()

	t0 := time.Now()
	netName := name + "_net"
	if _, err := d.NetworkCreate(ctx, netName, client.NetworkCreateOptions{
		Driver: "bridge", Labels: labels,
		IPAM: &network.IPAM{Driver: "default", Config: []network.IPAMConfig{{Subnet: subnet, Gateway: subnet.Addr().Next()}}},
	}); err != nil {
		return fr, fmt.Errorf("floor: network: %w", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 0)
	type portOf struct{ id, port string }
	var probes []portOf
	for svcName, s := range p.Services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg, hc, eps, ports, err := floorConfig(s, netName, labels)
			if err == nil {
				var res client.ContainerCreateResult
				res, err = d.ContainerCreate(ctx, client.ContainerCreateOptions{Config: cfg, HostConfig: hc,
					NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: eps}, Name: name + "-" + svcName})
				if err == nil {
					mu.Lock()
					ids = append(ids, res.ID)
					for _, pt := range ports {
						probes = append(probes, portOf{res.ID, pt})
					}
					mu.Unlock()
					_, err = d.ContainerStart(ctx, res.ID, client.ContainerStartOptions{})
				}
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("floor: %s: %w", svcName, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return fr, errors.Join(errs...)
	}
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	deadline := time.Now().Add(60 * time.Second)
	for _, pr := range probes {
		for {
			if err := floorProbe(ctx, d, hc, pr.id, pr.port); err == nil {
				break
			} else if time.Now().After(deadline) {
				return fr, fmt.Errorf("floor: %s %s: no answer within 60 s: %w", pr.id[:12], pr.port, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	fr.Up = time.Since(t0)
	t1 := time.Now()
	floorDown(ctx, d, name, ids)
	fr.Down = time.Since(t1)
	return fr, nil
}

// floorConfig turns one compose service into the engine's create request:
// image, hostname, environment, binds, labels, ports on 127.0.0.1
// (ephemeral), the fixed address; no healthcheck (the harness disables
// Docker's too). It returns the published container ports answering HTTP
// (all but 22).
func floorConfig(s types.ServiceConfig, netName string, labels map[string]string) (*container.Config, *container.HostConfig, map[string]*network.EndpointSettings, []string, error) {
	cfg := &container.Config{Image: s.Image, Hostname: s.Hostname, Labels: labels,
		Healthcheck:  &container.HealthConfig{Test: []string{"NONE"}},
		ExposedPorts: network.PortSet{}}
	for k, v := range s.Environment {
		if v != nil {
			cfg.Env = append(cfg.Env, k+"="+*v)
		}
	}
	hc := &container.HostConfig{PortBindings: network.PortMap{}}
	for _, v := range s.Volumes {
		if v.Type != types.VolumeTypeBind {
			return nil, nil, nil, nil, fmt.Errorf("volume %s: only binds are measured", v.Source)
		}
		b := v.Source + ":" + v.Target
		if v.ReadOnly {
			b += ":ro"
		}
		hc.Binds = append(hc.Binds, b)
	}
	var httpPorts []string
	for _, pc := range s.Ports {
		port, err := network.ParsePort(strconv.Itoa(int(pc.Target)) + "/tcp")
		if err != nil {
			return nil, nil, nil, nil, err
		}
		cfg.ExposedPorts[port] = struct{}{}
		hc.PortBindings[port] = []network.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1")}}
		if pc.Target != 22 {
			httpPorts = append(httpPorts, port.String())
		}
	}
	ep := &network.EndpointSettings{Aliases: []string{s.Name}}
	for _, n := range s.Networks {
		if n != nil && n.Ipv4Address != "" {
			a, err := netip.ParseAddr(n.Ipv4Address)
			if err != nil {
				return nil, nil, nil, nil, err
			}
			ep.IPAMConfig = &network.EndpointIPAMConfig{IPv4Address: a}
		}
	}
	return cfg, hc, map[string]*network.EndpointSettings{netName: ep}, httpPorts, nil
}

// floorProbe: one GET /health on the host port the engine gave port.
func floorProbe(ctx context.Context, d client.APIClient, hc *http.Client, id, port string) error {
	res, err := d.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return err
	}
	if res.Container.NetworkSettings == nil {
		return errors.New("no network settings yet")
	}
	p, err := network.ParsePort(port)
	if err != nil {
		return err
	}
	for _, b := range res.Container.NetworkSettings.Ports[p] {
		if b.HostPort == "" || b.HostPort == "0" {
			continue
		}
		resp, err := hc.Get("http://127.0.0.1:" + b.HostPort + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			return fmt.Errorf("GET /health: %s", resp.Status)
		}
		return nil
	}
	return errors.New("port not published yet")
}

// floorDown kills and removes the floor's containers in parallel, then its
// network.
func floorDown(ctx context.Context, d client.APIClient, name string, ids []string) {
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = d.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		}()
	}
	wg.Wait()
	_, _ = d.NetworkRemove(ctx, name+"_net", client.NetworkRemoveOptions{})
}
