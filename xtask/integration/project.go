package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/docker/compose/v5/pkg/api"
)

// findRepoDir walks up from the working directory to the directory holding
// tests/docker/ (go test runs in the package directory, Mage at the root).
// It looks for a compose file, not just the directory: the suites live in
// xtask/tests/docker/<category>/, and xtask/ must not pass for the root.
func findRepoDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if fi, err := os.Stat(filepath.Join(d, Localhost.File())); err == nil && !fi.IsDir() {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no tests/docker/ above %s: run from the rbee repository or use WithRepoDir", dir)
		}
	}
}

// stateDir holds files a stack bind-mounts that the harness generates (the
// queen's hives.conf for MultiHiveN). It outlives the process for kept
// stacks, so it is named after the project and removed with it.
func stateDir(project string) string {
	return filepath.Join(os.TempDir(), "rbee-harness", project)
}

// loadProject reads the topology's compose file with compose-go and rewrites
// it for isolation: own project name, no fixed container names, ephemeral
// 127.0.0.1 ports, no build sections, no extra capabilities, labels on every
// service and volume, networks replaced by pre-created external ones in the
// subnets chosen for this run (see createNetworks).
func (h *Harness) loadProject(ctx context.Context) (*types.Project, error) {
	file := filepath.Join(h.repoDir, h.topo.File())
	if _, err := os.Stat(file); err != nil {
		return nil, fmt.Errorf("topology %s: %w", h.topo, err)
	}
	env := make([]string, 0, len(h.cfg.env))
	for k, v := range h.cfg.env {
		env = append(env, k+"="+v)
	}
	// WithEnv before WithOsEnv: the process environment does not override WithEnv.
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithEnv(env),
		cli.WithOsEnv,
		cli.WithName(h.name),
	)
	if err != nil {
		return nil, fmt.Errorf("topology %s: %w", h.topo, err)
	}
	p, err := opts.LoadProject(ctx)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", file, err)
	}
	if h.topo.hives > 0 {
		if p, err = h.widenHives(p); err != nil {
			return nil, err
		}
	}
	if len(h.cfg.services) > 0 {
		for _, s := range h.cfg.services {
			if _, ok := p.Services[s]; !ok {
				return nil, fmt.Errorf("WithServices: unknown service %q in topology %s (have %s)", s, h.topo, strings.Join(sortedNames(p), ", "))
			}
		}
		if p, err = p.WithSelectedServices(h.cfg.services); err != nil {
			return nil, err
		}
		p = p.WithoutUnnecessaryResources()
	}
	if err := h.applyFiles(p); err != nil {
		return nil, err
	}
	labels := h.labels()
	for name, s := range p.Services {
		s.ContainerName = "" // fixed names would collide between parallel runs
		s.Build = nil        // the harness never builds: `go run mage.go setup` does
		s.PullPolicy = types.PullPolicyNever
		s.Restart = types.RestartPolicyNo // crashes stay crashed; the harness owns restarts
		// Faults come from helper containers; the system under test runs unprivileged.
		s.CapAdd = slices.DeleteFunc(s.CapAdd, func(c string) bool { return c == "NET_ADMIN" || c == "CAP_NET_ADMIN" })
		if s.Hostname == "" {
			s.Hostname = name
		}
		// Docker's own health probes are off (the engine bug at
		// dockerx.StopByLabel: a probe's exec racing a removal). The harness
		// runs the same check itself while it waits (ready).
		if hc := s.HealthCheck; hc != nil && !hc.Disable && len(hc.Test) > 0 {
			h.healthTests[name] = slices.Clone([]string(hc.Test))
		}
		s.HealthCheck = &types.HealthCheckConfig{Disable: true}
		for i := range s.Ports {
			s.Ports[i].HostIP = "127.0.0.1"
			s.Ports[i].Published = "" // ephemeral
		}
		if s.Labels == nil {
			s.Labels = types.Labels{}
		}
		for k, v := range labels {
			s.Labels[k] = v
		}
		// What `docker compose` sets (compose/pkg/compose/loader.go), so that
		// Ps, Down and `docker compose -p NAME …` by hand find the containers.
		s.CustomLabels = types.Labels{
			api.ProjectLabel:     p.Name,
			api.ServiceLabel:     name,
			api.VersionLabel:     api.ComposeVersion,
			api.WorkingDirLabel:  p.WorkingDir,
			api.ConfigFilesLabel: strings.Join(p.ComposeFiles, ","),
			api.OneoffLabel:      "False",
		}
		p.Services[name] = s
	}
	for name, v := range p.Volumes {
		if v.External {
			continue
		}
		if v.Labels == nil {
			v.Labels = types.Labels{}
		}
		for k, val := range labels {
			v.Labels[k] = val
		}
		p.Volumes[name] = v
	}
	return p, nil
}

// plannedNetwork is one network of the project, moved into a subnet of its own.
type plannedNetwork struct {
	key    string       // name in the compose file ("rbee-test")
	name   string       // Docker name (<project>_<key>)
	from   netip.Prefix // the compose file's subnet (addresses are remapped from it)
	subnet netip.Prefix // chosen for this run
}

// rewriteNetworks points every service at the chosen subnets: fixed
// addresses are remapped, networks become external (created by the harness
// so that a subnet clash can be retried before compose runs).
func rewriteNetworks(p *types.Project, plan []plannedNetwork) error {
	byKey := map[string]plannedNetwork{}
	for _, n := range plan {
		byKey[n.key] = n
	}
	for key, n := range p.Networks {
		pn, ok := byKey[key]
		if !ok {
			continue
		}
		n.Name = pn.name
		n.External = true
		n.Ipam = types.IPAMConfig{}
		p.Networks[key] = n
	}
	for name, s := range p.Services {
		for key, sn := range s.Networks {
			pn, ok := byKey[key]
			if !ok || sn == nil || sn.Ipv4Address == "" {
				continue
			}
			a, err := netip.ParseAddr(sn.Ipv4Address)
			if err != nil {
				return fmt.Errorf("service %s: ipv4_address %q: %w", name, sn.Ipv4Address, err)
			}
			na, err := remapAddr(a, pn.from, pn.subnet)
			if err != nil {
				return fmt.Errorf("service %s: %w", name, err)
			}
			sn.Ipv4Address = na.String()
		}
		p.Services[name] = s
	}
	return nil
}

// planNetworks lists the project's own networks with their original subnets.
func planNetworks(p *types.Project) ([]plannedNetwork, error) {
	var plan []plannedNetwork
	keys := make([]string, 0, len(p.Networks))
	for k := range p.Networks {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		n := p.Networks[key]
		if n.External || key == "default" && len(n.Ipam.Config) == 0 {
			continue
		}
		if n.Driver != "" && n.Driver != "bridge" {
			return nil, fmt.Errorf("network %s: driver %q is not supported (bridge only)", key, n.Driver)
		}
		pn := plannedNetwork{key: key, name: p.Name + "_" + key}
		if len(n.Ipam.Config) > 0 && n.Ipam.Config[0].Subnet != "" {
			pr, err := netip.ParsePrefix(n.Ipam.Config[0].Subnet)
			if err != nil {
				return nil, fmt.Errorf("network %s: subnet %q: %w", key, n.Ipam.Config[0].Subnet, err)
			}
			pn.from = pr
		}
		plan = append(plan, pn)
	}
	// Services on the implicit default network: give it a subnet too.
	if _, ok := p.Networks["default"]; !ok {
		for _, s := range p.Services {
			if _, uses := s.Networks["default"]; uses || len(s.Networks) == 0 && s.NetworkMode == "" {
				p.Networks["default"] = types.NetworkConfig{}
				plan = append(plan, plannedNetwork{key: "default", name: p.Name + "_default"})
				break
			}
		}
	}
	return plan, nil
}

// widenHives turns the multi-hive project into one with h.topo.hives hives,
// each a copy of hive-1, and mounts a generated hives.conf into the queen.
func (h *Harness) widenHives(p *types.Project) (*types.Project, error) {
	tmpl, ok := p.Services["hive-1"]
	if !ok {
		return nil, fmt.Errorf("topology %s: %s has no hive-1 to copy", h.topo, h.topo.file)
	}
	for name := range p.Services {
		if strings.HasPrefix(name, "hive-") {
			delete(p.Services, name)
		}
	}
	var hives []string
	for k := 1; k <= h.topo.hives; k++ {
		name := "hive-" + strconv.Itoa(k)
		hives = append(hives, name)
		s := cloneService(tmpl)
		s.Name = name
		s.Hostname = name
		for key, v := range s.Environment {
			if v != nil && *v == "hive-1" {
				nv := name
				s.Environment[key] = &nv
			}
		}
		for i, v := range s.Volumes {
			s.Volumes[i].Source = strings.ReplaceAll(v.Source, filepath.Join("hosts", "hive-1"), filepath.Join("hosts", name))
		}
		for key, sn := range s.Networks {
			if sn == nil || sn.Ipv4Address == "" {
				continue
			}
			a, err := netip.ParseAddr(sn.Ipv4Address)
			if err != nil {
				return nil, fmt.Errorf("hive-1: ipv4_address %q: %w", sn.Ipv4Address, err)
			}
			for j := 1; j < k; j++ {
				a = a.Next()
			}
			c := *sn
			c.Ipv4Address = a.String()
			s.Networks[key] = &c
		}
		p.Services[name] = s
	}
	// Dependencies on the old hives now mean all of the generated ones.
	for name, s := range p.Services {
		if strings.HasPrefix(name, "hive-") {
			continue
		}
		var cond *types.ServiceDependency
		for dep, d := range s.DependsOn {
			if strings.HasPrefix(dep, "hive-") {
				d := d
				cond = &d
				delete(s.DependsOn, dep)
			}
		}
		if cond != nil {
			for _, hv := range hives {
				s.DependsOn[hv] = *cond
			}
		}
		p.Services[name] = s
	}
	queen, ok := p.Services["queen"]
	if !ok {
		return p, nil
	}
	conf, err := h.writeHivesConf(hives)
	if err != nil {
		return nil, err
	}
	found := false
	for i, v := range queen.Volumes {
		if v.Target == "/etc/rbee/hives.conf" {
			queen.Volumes[i].Source = conf
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("topology %s: the queen mounts no /etc/rbee/hives.conf to replace", h.topo)
	}
	p.Services["queen"] = queen
	return p, nil
}

// cloneService copies the parts of a service widenHives changes.
func cloneService(s types.ServiceConfig) types.ServiceConfig {
	c := s
	c.Environment = types.MappingWithEquals{}
	for k, v := range s.Environment {
		c.Environment[k] = v
	}
	c.Volumes = slices.Clone(s.Volumes)
	c.Ports = slices.Clone(s.Ports)
	c.Networks = map[string]*types.ServiceNetworkConfig{}
	for k, v := range s.Networks {
		c.Networks[k] = v
	}
	c.Labels = types.Labels{}
	for k, v := range s.Labels {
		c.Labels[k] = v
	}
	c.CapAdd = slices.Clone(s.CapAdd)
	c.DependsOn = types.DependsOnConfig{}
	for k, v := range s.DependsOn {
		c.DependsOn[k] = v
	}
	return c
}

// hivesConf renders PROTOCOL §6 hives.conf for the given hive names.
func hivesConf(hives []string) string {
	var b strings.Builder
	b.WriteString("# Generated by xtask/integration for MultiHiveN.\n")
	for _, hv := range hives {
		fmt.Fprintf(&b, "\n[[hive]]\nalias       = %q\nhostname    = %q\nssh_port    = 22\nssh_user    = \"rbee\"\nhive_port   = 9000\nauto_start  = true\nbinary_path = \"~/.local/bin/rbee-hive\"\n", hv, hv)
	}
	return b.String()
}

func (h *Harness) writeHivesConf(hives []string) (string, error) {
	dir := stateDir(h.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "hives.conf")
	if err := os.WriteFile(path, []byte(hivesConf(hives)), 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// applyFiles writes each WithFile override under the stack's state directory
// and bind-mounts it at its target, replacing a mount already there.
func (h *Harness) applyFiles(p *types.Project) error {
	for i, f := range h.cfg.files {
		svc, ok := p.Services[f.service]
		if !ok {
			return fmt.Errorf("WithFile: unknown service %q in topology %s (have %s)", f.service, h.topo, strings.Join(sortedNames(p), ", "))
		}
		dir := filepath.Join(stateDir(h.name), "files", fmt.Sprintf("%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		src := filepath.Join(dir, filepath.Base(f.target))
		mode := os.FileMode(0o644)
		if f.writable {
			mode = 0o600
		}
		if err := os.WriteFile(src, f.content, mode); err != nil {
			return err
		}
		if err := os.Chmod(src, mode); err != nil { // WriteFile's mode is subject to the umask
			return err
		}
		mount := types.ServiceVolumeConfig{Type: types.VolumeTypeBind, Source: src, Target: f.target, ReadOnly: !f.writable}
		replaced := false
		for j, v := range svc.Volumes {
			if v.Target == f.target {
				svc.Volumes[j] = mount
				replaced = true
			}
		}
		if !replaced {
			svc.Volumes = append(svc.Volumes, mount)
		}
		p.Services[f.service] = svc
	}
	return nil
}

func sortedNames(p *types.Project) []string {
	names := p.ServiceNames()
	sort.Strings(names)
	return names
}
