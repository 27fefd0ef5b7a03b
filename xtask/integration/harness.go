package integration

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/docker/compose/v5/pkg/api"
	"github.com/docker/compose/v5/pkg/compose"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/rbee-dev/rbee/xtask/dockerx"
)

// Harness is one running topology: its containers, network, active faults
// and transcript. Methods are safe for concurrent use. Create it with New
// (or Start in a test) and always Close it.
type Harness struct {
	cfg     config
	topo    Topology
	name    string // compose project name, unique per harness
	repoDir string
	started time.Time

	docker  client.APIClient
	compose api.Compose
	project *types.Project
	nets    []plannedNetwork
	gateway map[string]netip.Addr // network key → gateway (the host side of the bridge)
	// healthTests are the services' healthcheck commands (compose file or
	// image), run by ready instead of by Docker.
	healthTests map[string][]string
	lastCheck   map[string]checkResult // container id → latest healthcheck run

	mu       sync.Mutex
	services map[string]*service
	closed   bool
	phases   []Phase // New's and Close's steps (Phases)

	faultMu    sync.Mutex // serialises fault changes (each may exec into helpers)
	faults     []rule     // active, in injection order
	helpers    map[string]*helper
	netemOK    *bool
	transcript []string

	tl      *recorder   // the timeline of the failure report (timeline.go)
	capture *captureRun // packet capture of the run's networks (capture.go)
}

// service is what the harness knows about one compose service's container.
type service struct {
	name  string
	id    string
	ips   map[string]netip.Addr // network key → address
	ports map[int]int           // container tcp port → host port on 127.0.0.1
	deps  types.DependsOnConfig
}

// New brings topo up: loads its compose file, isolates it (own project name,
// subnet, ephemeral ports, labels), creates it with the Compose SDK, starts
// services in dependency order and waits until each is healthy (see
// WaitForHealthy). Resources of killed earlier runs are reaped first.
//
// On error New may still return a non-nil Harness holding what it created:
// Close it (Close on nil is a no-op), or let Start do it. The returned error
// then includes the last log lines of the failing service.
func New(ctx context.Context, topo Topology, opts ...Option) (*Harness, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	return newHarness(ctx, topo, cfg, projectName(cfg.name))
}

func newHarness(ctx context.Context, topo Topology, cfg config, name string) (*Harness, error) {
	if err := topo.validate(); err != nil {
		return nil, err
	}
	h := &Harness{cfg: cfg, topo: topo, name: name, started: time.Now(), services: map[string]*service{}, helpers: map[string]*helper{}, gateway: map[string]netip.Addr{}, healthTests: map[string][]string{}}
	var err error
	if h.repoDir = cfg.repoDir; h.repoDir == "" {
		if h.repoDir, err = findRepoDir(); err != nil {
			return nil, err
		}
	}
	if h.cfg.keysDir == "" {
		h.cfg.keysDir = h.repoDir + "/keys"
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()

	tp := h.started
	if h.docker, h.compose, err = connect(ctx); err != nil {
		return nil, err
	}
	tp = h.phase("connect", tp)
	h.startTimeline()
	if reapDue() {
		if n, err := reap(ctx, h.docker); err != nil {
			h.logf("reaper: %v", err)
		} else if n > 0 {
			h.logf("reaper: removed %d resources of runs whose owner process is gone", n)
		}
	}
	tp = h.phase("reap", tp)
	if h.project, err = h.loadProject(ctx); err != nil {
		return nil, err
	}
	tp = h.phase("load", tp)
	if err := h.checkImages(ctx); err != nil {
		return nil, err
	}
	tp = h.phase("images", tp)
	// From here on resources exist: return h so the caller can Close it,
	// and an interrupt of the process removes them (interrupt.go).
	track(h.name, h.docker)
	if err := h.createNetworks(ctx); err != nil {
		return h, err
	}
	tp = h.phase("network", tp)
	// The capture starts alongside compose create and is reading before
	// the first container starts.
	if err := h.startCapture(ctx); err != nil {
		return h, err
	}
	t0 := tp
	if err := h.compose.Create(ctx, h.project, api.CreateOptions{Recreate: api.RecreateForce, RecreateDependencies: api.RecreateForce, QuietPull: true}); err != nil {
		return h, fmt.Errorf("compose create %s: %w", h.name, err)
	}
	if err := h.discover(ctx); err != nil {
		return h, err
	}
	tp = h.phase("create", tp)
	h.logf("%s: created %d containers in %v", h.name, len(h.services), time.Since(t0).Round(time.Millisecond))
	h.awaitCapture(ctx)
	tp = h.phase("capture", tp)
	if err := h.startAll(ctx); err != nil {
		return h, err
	}
	h.phase("start+ready", tp)
	h.logf("%s: %s up and healthy in %v (subnet %s)", h.name, topo, time.Since(h.started).Round(time.Millisecond), h.subnets())
	return h, nil
}

// connect builds the engine client the way the docker CLI does and the
// Compose service on top of it.
func connect(ctx context.Context) (client.APIClient, api.Compose, error) {
	dcli, err := dockerx.ConnectCLI(ctx)
	if err != nil {
		return nil, nil, err
	}
	svc, err := compose.NewComposeService(dcli, compose.WithStreams(discard{}, discard{}, strings.NewReader("")))
	if err != nil {
		return nil, nil, err
	}
	return dcli.Client(), svc, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// labels are the harness labels every resource of this run carries.
func (h *Harness) labels() map[string]string {
	l := dockerx.OwnerLabels()
	l[dockerx.LabelProject] = dockerx.ProjectValue
	l[dockerx.LabelTest] = h.cfg.name
	l[dockerx.LabelRun] = h.name
	l[dockerx.LabelStartedAt] = h.started.UTC().Format(time.RFC3339)
	if h.cfg.keep {
		l[dockerx.LabelKeep] = "1"
	}
	return l
}

func (h *Harness) checkImages(ctx context.Context) error {
	// One inspect per image: it proves the image is there and gives the
	// healthcheck of services that have none in the compose file.
	inspected := map[string]*container.HealthConfig{}
	for _, s := range h.project.Services {
		if s.Image == "" {
			continue
		}
		if _, seen := inspected[s.Image]; seen {
			continue
		}
		img, err := h.docker.ImageInspect(ctx, s.Image)
		if err != nil {
			return fmt.Errorf("image %s (service %s) is missing: run `go run mage.go setup`: %w", s.Image, s.Name, err)
		}
		inspected[s.Image] = nil
		if img.Config != nil {
			inspected[s.Image] = img.Config.Healthcheck
		}
	}
	for name, s := range h.project.Services {
		if _, ok := h.healthTests[name]; ok || s.Image == "" {
			continue
		}
		if hc := inspected[s.Image]; hc != nil && len(hc.Test) > 0 {
			h.healthTests[name] = hc.Test
		}
	}
	return nil
}

// reapEvery is how often one process looks for dead runs' leftovers: the
// first New of a test binary reaps, later ones within the interval skip it
// (the runs of a live process are not reapable anyway).
const reapEvery = time.Minute

var (
	reapMu   sync.Mutex
	lastReap time.Time
)

func reapDue() bool {
	reapMu.Lock()
	defer reapMu.Unlock()
	if !lastReap.IsZero() && time.Since(lastReap) < reapEvery {
		return false
	}
	lastReap = time.Now()
	return true
}

// createNetworks creates the project's networks in free subnets. Parallel
// runs race for subnets; the loser gets "Pool overlaps" and tries the next.
func (h *Harness) createNetworks(ctx context.Context) error {
	plan, err := planNetworks(h.project)
	if err != nil {
		return err
	}
	for i := range plan {
		pn := &plan[i]
		var lastErr error
		for attempt := 0; attempt < 20; attempt++ {
			// First try a random /24 without listing every network of the
			// engine (a shared engine has many): a clash is rare and is
			// answered with "overlap", after which the list is consulted.
			var used []netip.Prefix
			if attempt > 0 {
				if used, err = dockerx.UsedSubnets(ctx, h.docker); err != nil {
					return err
				}
			}
			subnet, err := pickSubnet(used, randInt())
			if err != nil {
				return err
			}
			gw := subnet.Addr().Next()
			labels := h.labels()
			labels[api.ProjectLabel] = h.name
			labels[api.NetworkLabel] = pn.key
			labels[api.VersionLabel] = api.ComposeVersion
			_, err = h.docker.NetworkCreate(ctx, pn.name, client.NetworkCreateOptions{
				Driver: "bridge",
				IPAM:   &network.IPAM{Driver: "default", Config: []network.IPAMConfig{{Subnet: subnet, Gateway: gw}}},
				Labels: labels,
			})
			if err == nil {
				pn.subnet = subnet
				h.gateway[pn.key] = gw
				lastErr = nil
				break
			}
			lastErr = err
			if !strings.Contains(err.Error(), "overlap") {
				return fmt.Errorf("create network %s: %w", pn.name, err)
			}
		}
		if lastErr != nil {
			return fmt.Errorf("create network %s: no free subnet after 20 tries: %w", pn.name, lastErr)
		}
		if !pn.from.IsValid() {
			pn.from = pn.subnet
		}
		h.nets = append(h.nets, *pn)
	}
	return rewriteNetworks(h.project, h.nets)
}

// discover maps every service to its container and reads addresses and ports.
func (h *Harness) discover(ctx context.Context) error {
	res, err := h.docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", api.ProjectLabel+"="+h.name)})
	if err != nil {
		return fmt.Errorf("list containers of %s: %w", h.name, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range res.Items {
		svc := c.Labels[api.ServiceLabel]
		if svc == "" {
			continue
		}
		h.services[svc] = &service{name: svc, id: c.ID, deps: h.project.Services[svc].DependsOn}
	}
	for name := range h.project.Services {
		if _, ok := h.services[name]; !ok {
			return fmt.Errorf("compose created no container for service %s", name)
		}
	}
	return nil
}

// refresh re-reads a service's addresses and published ports: Docker picks
// new ephemeral host ports each time a container starts.
func (h *Harness) refresh(ctx context.Context, name string) error {
	s, err := h.service(name)
	if err != nil {
		return err
	}
	res, err := h.docker.ContainerInspect(ctx, s.id, client.ContainerInspectOptions{})
	if err != nil {
		return fmt.Errorf("inspect %s: %w", name, err)
	}
	h.updateFromInspect(name, res)
	return nil
}

func (h *Harness) updateFromInspect(name string, res client.ContainerInspectResult) {
	c := res.Container
	ips := map[string]netip.Addr{}
	ports := map[int]int{}
	if c.NetworkSettings != nil {
		for _, pn := range h.nets {
			if ep, ok := c.NetworkSettings.Networks[pn.name]; ok && ep != nil && ep.IPAddress.IsValid() {
				ips[pn.key] = ep.IPAddress
			}
		}
		for p, bs := range c.NetworkSettings.Ports {
			if p.Proto() != network.TCP {
				continue
			}
			for _, b := range bs {
				if hp, err := strconv.Atoi(b.HostPort); err == nil && hp > 0 {
					ports[int(p.Num())] = hp
					break
				}
			}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.services[name]
	if s == nil {
		return
	}
	if len(ips) > 0 {
		s.ips = ips
	}
	s.ports = ports // empty while stopped: URL then says so
}

func (h *Harness) service(name string) (*service, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, fmt.Errorf("harness %s is closed", h.name)
	}
	s, ok := h.services[name]
	if !ok {
		return nil, fmt.Errorf("unknown service %q in %s (have %s)", name, h.topo, strings.Join(h.serviceNamesLocked(), ", "))
	}
	return s, nil
}

// Services lists the topology's service names, sorted.
func (h *Harness) Services() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.serviceNamesLocked()
}

func (h *Harness) serviceNamesLocked() []string {
	names := make([]string, 0, len(h.services))
	for n := range h.services {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Name is the compose project name: `docker compose -p NAME ps` shows the stack.
func (h *Harness) Name() string { return h.name }

func (h *Harness) subnets() string {
	var s []string
	for _, n := range h.nets {
		s = append(s, n.subnet.String())
	}
	return strings.Join(s, ",")
}

func (h *Harness) logf(format string, args ...any) { h.cfg.logf(format, args...) }

// Close heals active faults, then removes every container, network and volume
// of this harness (compose down by project name, then a sweep by label for
// anything compose does not own, such as fault helpers). It is safe to call
// more than once and on a nil or half-built Harness.
func (h *Harness) Close(ctx context.Context) error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	h.mu.Unlock()
	h.tl.stop()
	if h.docker == nil {
		return nil
	}
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	h.faultMu.Lock()
	if len(h.faults) > 0 {
		h.record("close: %d active faults dropped with the stack: %s", len(h.faults), describe(h.faults))
	}
	h.faults = nil
	for _, hp := range h.helpers {
		if hp.admin != nil {
			hp.admin.close()
		}
	}
	h.faultMu.Unlock()
	h.settleCapture(ctx)
	// Without compose down: every resource of the run carries its label, so
	// removeRun's kill and label sweep remove all of it (the reaper's path),
	// and compose's own listing and stopping is time spent twice.
	err := removeRun(ctx, h.docker, nil, h.name)
	untrack(h.name)
	h.phase("close", t0)
	h.logf("%s: closed in %v", h.name, time.Since(t0).Round(time.Millisecond))
	return err
}

// removeRun deletes everything of one run: helpers first (they share the
// targets' network namespaces), then the run's containers are stopped,
// compose down, and a label sweep of whatever compose did not remove
// (the harness-made networks, helpers, markers).
func removeRun(ctx context.Context, d client.APIClient, c api.Compose, run string) error {
	var errs []error
	byRun := dockerx.LabelRun + "=" + run
	if _, err := dockerx.RemoveByLabel(ctx, d, byRun, dockerx.LabelRole+"=fault-helper"); err != nil {
		errs = append(errs, err)
	}
	if err := dockerx.StopByLabel(ctx, d, byRun); err != nil {
		errs = append(errs, err)
	}
	zero := time.Duration(0)
	if c != nil {
		if err := c.Down(ctx, run, api.DownOptions{Timeout: &zero, Volumes: true, RemoveOrphans: true}); err != nil {
			errs = append(errs, fmt.Errorf("compose down %s: %w", run, err))
		}
	}
	if _, err := dockerx.RemoveByLabel(ctx, d, byRun); err != nil {
		errs = append(errs, err)
	}
	_ = os.RemoveAll(stateDir(run))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove %s: %w", run, err)
	}
	return nil
}
