package integration

// Tests without Docker: argument checking, subnet choice, project rewriting,
// fault rule rendering. `go test ./xtask/integration/` runs them anywhere.

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/compose/v5/pkg/api"

	"github.com/rbee-dev/rbee/xtask/dockerx"
)

func TestParseTopology(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Topology
		wantErr string
	}{
		{"localhost", Localhost, ""},
		{"multi-hive", MultiHive, ""},
		{"full-stack", FullStack, ""},
		{"multi-hive-5", MultiHiveN(5), ""},
		{"multi-hive-8", MultiHiveN(8), ""},
		{"multi-hive-9", Topology{}, "hive count must be 1…8"},
		{"multi-hive-0", Topology{}, "hive count must be 1…8"},
		{"multi-hive-x", Topology{}, "unknown topology"},
		{"", Topology{}, "unknown topology"},
		{"Localhost", Topology{}, "unknown topology"},
	} {
		got, err := ParseTopology(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseTopology(%q) error = %v, want containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseTopology(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// New rejects bad arguments before touching Docker.
func TestNewRejectsBadArguments(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		topo    Topology
		opts    []Option
		wantErr string
	}{
		{"zero topology", Topology{}, nil, "unknown topology"},
		{"too many hives", MultiHiveN(9), nil, "hive count"},
		{"negative hives", MultiHiveN(-1), nil, "hive count"},
		{"zero timeout", Localhost, []Option{WithTimeout(0)}, "not a positive duration"},
		{"negative timeout", Localhost, []Option{WithTimeout(-time.Second)}, "not a positive duration"},
		{"empty services", Localhost, []Option{WithServices()}, "no services"},
		{"unusable name", Localhost, []Option{WithName("///")}, "no usable characters"},
		{"empty env name", Localhost, []Option{WithEnv(map[string]string{"": "x"})}, "empty variable name"},
		{"empty fault image", Localhost, []Option{WithFaultImage("")}, "empty image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := New(ctx, tc.topo, tc.opts...)
			if h != nil {
				t.Errorf("New returned a harness for bad arguments")
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New error = %v, want containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestProjectName(t *testing.T) {
	a, b := projectName("TestFoo/sub_case#01"), projectName("TestFoo/sub_case#01")
	if a == b {
		t.Fatalf("two harnesses of one test share project name %s", a)
	}
	if !strings.HasPrefix(a, "rbee-testfoo-sub-case-01-") {
		t.Fatalf("projectName = %s", a)
	}
	long := projectName(strings.Repeat("x", 200))
	if len(long) > 60 {
		t.Fatalf("projectName too long: %d", len(long))
	}
	for _, c := range a {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			t.Fatalf("projectName %q has %q", a, c)
		}
	}
}

func TestPickSubnet(t *testing.T) {
	p := netip.MustParsePrefix
	first, err := pickSubnet(nil, 0)
	if err != nil || first != p("172.28.0.0/24") {
		t.Fatalf("pickSubnet(nil, 0) = %v, %v", first, err)
	}
	got, _ := pickSubnet(nil, 1023)
	if got != p("172.31.255.0/24") {
		t.Fatalf("last = %v", got)
	}
	got, _ = pickSubnet(nil, 1024)
	if got != p("172.28.0.0/24") {
		t.Fatalf("wrap = %v", got)
	}
	// Overlap with a used /16 skips all of its /24s.
	got, _ = pickSubnet([]netip.Prefix{p("172.28.0.0/16"), p("172.29.0.0/24")}, 0)
	if got != p("172.29.1.0/24") {
		t.Fatalf("skip = %v", got)
	}
	// A used supernet covering the pool: nothing free.
	if _, err := pickSubnet([]netip.Prefix{p("172.16.0.0/12")}, 5); err == nil {
		t.Fatal("pickSubnet found a subnet in a fully used pool")
	}
}

func TestRemapAddr(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	for _, tc := range []struct {
		addr, from, to string
		want           string
	}{
		{"172.20.0.10", "172.20.0.0/16", "172.29.7.0/24", "172.29.7.10"},
		{"172.20.0.41", "172.20.0.0/16", "172.29.7.0/24", "172.29.7.41"},
		{"172.20.0.254", "172.20.0.0/16", "172.28.0.0/24", "172.28.0.254"},
		{"172.20.1.10", "172.20.0.0/16", "172.29.7.0/24", "error"}, // offset 266 does not fit a /24
		{"172.20.0.1", "172.20.0.0/16", "172.29.7.0/24", "error"},  // the gateway
		{"172.21.0.10", "172.20.0.0/16", "172.29.7.0/24", "error"}, // outside its subnet
		{"172.20.0.255", "172.20.0.0/16", "172.29.7.0/24", "error"},
	} {
		got, err := remapAddr(a(tc.addr), p(tc.from), p(tc.to))
		if tc.want == "error" {
			if err == nil {
				t.Errorf("remapAddr(%s) = %s, want error", tc.addr, got)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("remapAddr(%s) = %v, %v; want %s", tc.addr, got, err, tc.want)
		}
	}
}

// fakeHarness is a Harness with services but no Docker, for argument checks.
func fakeHarness(t *testing.T, names ...string) *Harness {
	t.Helper()
	h := &Harness{cfg: defaultConfig(), topo: Localhost, name: "rbee-fake-000000", started: time.Now(), services: map[string]*service{}, helpers: map[string]*helper{}}
	for i, n := range names {
		h.services[n] = &service{name: n, id: "id-" + n, ips: map[string]netip.Addr{"rbee-test": netip.AddrFrom4([4]byte{172, 28, 0, byte(10 + i)})}, ports: map[int]int{8500: 40000 + i}}
	}
	h.nets = []plannedNetwork{{key: "rbee-test", subnet: netip.MustParsePrefix("172.28.0.0/24")}}
	return h
}

// Bad arguments to every operation are errors that name the problem, and
// none reaches Docker (the fake harness has no client: it would panic).
func TestHarnessRejectsBadArguments(t *testing.T) {
	h := fakeHarness(t, "queen", "hive-1")
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		call    func() error
		wantErr string
	}{
		{"exec unknown", func() error { _, err := h.Exec(ctx, "nope", []string{"true"}); return err }, `unknown service "nope"`},
		{"exec empty", func() error { _, err := h.Exec(ctx, "queen", nil); return err }, "empty command"},
		{"logs unknown", func() error { _, err := h.Logs(ctx, "nope"); return err }, `unknown service "nope"`},
		{"restart unknown", func() error { return h.Restart(ctx, "nope") }, `unknown service "nope"`},
		{"kill unknown", func() error { return h.Kill(ctx, "nope") }, `unknown service "nope"`},
		{"bad signal", func() error { return h.Signal(ctx, "queen", syscall.Signal(0)) }, "invalid signal"},
		{"stop unknown", func() error { return h.Stop(ctx, "nope") }, `unknown service "nope"`},
		{"start unknown", func() error { return h.StartService(ctx, "nope") }, `unknown service "nope"`},
		{"pause unknown", func() error { return h.Pause(ctx, "nope") }, `unknown service "nope"`},
		{"unpause unknown", func() error { return h.Unpause(ctx, "nope") }, `unknown service "nope"`},
		{"url unknown", func() error { _, err := h.URL("nope", 8500); return err }, `unknown service "nope"`},
		{"url unpublished port", func() error { _, err := h.URL("queen", 1234); return err }, "does not publish port 1234 (publishes 8500)"},
		{"ip unknown", func() error { _, err := h.IP("nope"); return err }, `unknown service "nope"`},
		{"ssh unknown", func() error { _, err := h.SSH(ctx, "nope"); return err }, `unknown service "nope"`},
		{"wait zero timeout", func() error { return h.WaitForHealthy(ctx, "queen", 0) }, "timeout 0s must be positive"},
		{"wait exit zero timeout", func() error { _, err := h.WaitForExit(ctx, "queen", 0); return err }, "timeout 0s must be positive"},
		{"wait exit unknown", func() error { _, err := h.WaitForExit(ctx, "nope", time.Second); return err }, `unknown service "nope"`},
		{"wait unknown", func() error { return h.WaitForHealthy(ctx, "nope", time.Second) }, `unknown service "nope"`},
		{"block self", func() error { return h.Inject(ctx, Block("queen", "queen")) }, "cannot block queen from itself"},
		{"block unknown from", func() error { return h.Inject(ctx, Block("nope", "queen")) }, `unknown service "nope"`},
		{"block unknown to", func() error { return h.Inject(ctx, Block("queen", "nope")) }, `unknown service "nope"`},
		{"reject self", func() error { return h.Inject(ctx, Reject("hive-1", "hive-1")) }, "from itself"},
		{"partition self", func() error { return h.Inject(ctx, Partition("hive-1", "hive-1")) }, "from itself"},
		{"recover missing block", func() error { return h.Recover(ctx, Block("queen", "hive-1")) }, "recover block(queen→hive-1): block queen→hive-1 (drop) is not active (active: none)"},
		{"recover self", func() error { return h.Recover(ctx, Block("queen", "queen")) }, "from itself"},
		{"recover unknown", func() error { return h.Recover(ctx, Block("queen", "nope")) }, `unknown service "nope"`},
		{"recover inactive reject", func() error { return h.Recover(ctx, Reject("queen", "hive-1")) }, "is not active"},
		{"isolate unknown", func() error { return h.Inject(ctx, Isolate("nope")) }, `unknown service "nope"`},
		{"loss zero", func() error { return h.Inject(ctx, Loss("queen", 0)) }, "not in (0, 100]"},
		{"loss over 100", func() error { return h.Inject(ctx, Loss("queen", 101)) }, "not in (0, 100]"},
		{"rate garbage", func() error { return h.Inject(ctx, RateLimit("queen", "fast")) }, "not a tc rate"},
		{"packet latency zero", func() error { return h.Inject(ctx, PacketLatency("queen", 0, 0)) }, "must be positive"},
		{"packet latency jitter above delay", func() error { return h.Inject(ctx, PacketLatency("queen", time.Millisecond, time.Second)) }, "jitter 1s must be in [0, 1ms]"},
		{"empty fault", func() error { return h.Inject(ctx, Fault{}) }, "empty fault"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want containing %q", err, tc.wantErr)
			}
		})
	}
	if got := h.Faults(); len(got) != 0 {
		t.Fatalf("failed calls left faults recorded: %v", got)
	}
	// After Close every call says so.
	h.closed = true
	if _, err := h.URL("queen", 8500); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("URL after close: %v", err)
	}
}

func TestURL(t *testing.T) {
	h := fakeHarness(t, "queen")
	u, err := h.URL("queen", 8500)
	if err != nil || u != "http://127.0.0.1:40000" {
		t.Fatalf("URL = %q, %v", u, err)
	}
	if ip, _ := h.IP("queen"); ip != "172.28.0.10" {
		t.Fatalf("IP = %s", ip)
	}
}

func TestCloseNilAndTwice(t *testing.T) {
	var h *Harness
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	f := fakeHarness(t, "queen")
	if err := f.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRenderRules(t *testing.T) {
	env := ruleEnv{
		self:    netip.MustParseAddr("172.28.0.10"),
		peers:   map[string]netip.Addr{"hive-1": netip.MustParseAddr("172.28.0.20")},
		subnet:  netip.MustParsePrefix("172.28.0.0/24"),
		gateway: netip.MustParseAddr("172.28.0.1"),
	}
	for _, tc := range []struct {
		name  string
		fx    []rule
		want  []string
		avoid []string
	}{
		{"none: flush only", nil, []string{"iptables-restore -w --noflush <<RULES\n*filter\n:RBEE-IN - [0:0]\n:RBEE-OUT - [0:0]\n-A RBEE-IN -s 172.28.0.1", "tc qdisc del dev $dev root"}, []string{"-j DROP", "qdisc replace", "-F"}},
		{"drop is directed", Block("queen", "hive-1").parts, []string{"-A RBEE-OUT -d 172.28.0.20 -m conntrack --ctdir ORIGINAL -j DROP"}, []string{"RBEE-IN -s 172.28.0.20"}},
		{"reject", Reject("queen", "hive-1").parts, []string{"--reject-with tcp-reset", "--reject-with icmp-port-unreachable"}, nil},
		{"isolate spares the gateway", Isolate("queen").parts, []string{"-A RBEE-OUT -d 172.28.0.1 -j RETURN", "-A RBEE-OUT -d 172.28.0.0/24 -j DROP", "-A RBEE-IN -s 172.28.0.1 -j RETURN", "-A RBEE-IN -s 172.28.0.0/24 -j DROP"}, nil},
		{"loss", Loss("queen", 25).parts, []string{"--probability 0.2500 -j DROP", "-i $dev", "-o $dev"}, nil},
		{"rate", RateLimit("queen", "1mbit").parts, []string{"tc qdisc replace dev $dev root tbf rate 1mbit"}, []string{"netem", "qdisc del"}},
		{"packet latency", PacketLatency("queen", 150*time.Millisecond, 0).parts, []string{"netem delay 150ms\n"}, []string{"rbee-toxic", "nat"}},
		{"packet latency with jitter", PacketLatency("queen", 150*time.Millisecond, 20*time.Millisecond).parts, []string{"netem delay 150ms 20ms"}, nil},
		{"every rule set exempts the admin endpoint first", Block("queen", "hive-1").parts, []string{":RBEE-OUT - [0:0]\n-A RBEE-IN -s 172.28.0.1 -p tcp --dport 39723 -j RETURN\n-A RBEE-OUT -d 172.28.0.1 -p tcp --sport 39723 -j RETURN\n-A RBEE-OUT -d 172.28.0.20"}, []string{"iptables -w -A", "-F RBEE"}},
		{"the chains change in one transaction each", Block("queen", "hive-1").parts, []string{"-j DROP\nCOMMIT\nRULES\n"}, []string{"iptables -w -N", "iptables -w -F"}},
		{"packet latency and rate", append(PacketLatency("queen", 20*time.Millisecond, 0).parts, RateLimit("queen", "1mbit").parts...), []string{"netem delay 20ms rate 1mbit"}, []string{"tbf"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := render(tc.fx, env, false)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("rules lack %q:\n%s", w, got)
				}
			}
			for _, a := range tc.avoid {
				if strings.Contains(got, a) {
					t.Errorf("rules contain %q:\n%s", a, got)
				}
			}
		})
	}
}

func TestEffectKeys(t *testing.T) {
	if Block("a", "b").parts[0].key() == Block("b", "a").parts[0].key() {
		t.Fatal("blocks in opposite directions share a key")
	}
	if Loss("a", 10).parts[0].key() != Loss("a", 50).parts[0].key() {
		t.Fatal("two losses on one service must replace each other")
	}
	if Block("a", "b").parts[0].key() == Reject("a", "b").parts[0].key() {
		t.Fatal("drop and reject share a key")
	}
	if len(Partition("a", "b").parts) != 2 {
		t.Fatal("partition is not two directed blocks")
	}
}

// The compose files load with compose-go and come out isolated: no fixed
// names or host ports, compose's and our labels, no extra capabilities,
// addresses in the run's subnet. Needs the repository's tests/docker/.
func TestLoadProjectRewrites(t *testing.T) {
	repo, err := findRepoDir()
	if err != nil {
		t.Skip(err)
	}
	for _, tc := range []struct {
		topo     Topology
		services []string
	}{
		{Localhost, []string{"hive-localhost", "queen"}},
		{MultiHive, []string{"hive-1", "hive-2", "queen"}},
		{FullStack, []string{"hive-1", "hive-2", "hub", "queen", "worker-1", "worker-2"}},
		{MultiHiveN(5), []string{"hive-1", "hive-2", "hive-3", "hive-4", "hive-5", "queen"}},
		{MultiHiveN(1), []string{"hive-1", "queen"}},
	} {
		t.Run(tc.topo.String(), func(t *testing.T) {
			h := &Harness{cfg: defaultConfig(), topo: tc.topo, name: projectName("unit"), repoDir: repo, started: time.Now()}
			h.cfg.name = "TestUnit"
			t.Cleanup(func() { os.RemoveAll(stateDir(h.name)) })
			p, err := h.loadProject(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(sortedNames(p), ","); got != strings.Join(tc.services, ",") {
				t.Fatalf("services = %s, want %v", got, tc.services)
			}
			plan, err := planNetworks(p)
			if err != nil || len(plan) != 1 {
				t.Fatalf("planNetworks = %v, %v", plan, err)
			}
			plan[0].subnet = netip.MustParsePrefix("172.30.9.0/24")
			if err := rewriteNetworks(p, plan); err != nil {
				t.Fatal(err)
			}
			seen := map[string]string{}
			for name, s := range p.Services {
				if s.ContainerName != "" || s.Build != nil {
					t.Errorf("%s: container_name %q, build %v", name, s.ContainerName, s.Build)
				}
				for _, c := range s.CapAdd {
					if strings.Contains(c, "NET_ADMIN") {
						t.Errorf("%s keeps %s", name, c)
					}
				}
				for _, pc := range s.Ports {
					if pc.HostIP != "127.0.0.1" || pc.Published != "" {
						t.Errorf("%s: port %+v is not ephemeral on 127.0.0.1", name, pc)
					}
				}
				if s.Labels[dockerx.LabelProject] != dockerx.ProjectValue || s.Labels[dockerx.LabelTest] != "TestUnit" || s.Labels[dockerx.LabelRun] != h.name || s.Labels[dockerx.LabelOwnerPID] == "" || s.Labels[dockerx.LabelStartedAt] == "" {
					t.Errorf("%s: labels %v", name, s.Labels)
				}
				if s.CustomLabels[api.ProjectLabel] != h.name || s.CustomLabels[api.ServiceLabel] != name || s.CustomLabels[api.OneoffLabel] != "False" {
					t.Errorf("%s: compose labels %v", name, s.CustomLabels)
				}
				for _, sn := range s.Networks {
					if !strings.HasPrefix(sn.Ipv4Address, "172.30.9.") {
						t.Errorf("%s: address %s not in the run's subnet", name, sn.Ipv4Address)
					}
					if other, dup := seen[sn.Ipv4Address]; dup {
						t.Errorf("%s and %s share %s", name, other, sn.Ipv4Address)
					}
					seen[sn.Ipv4Address] = name
				}
			}
			if tc.topo.hives > 0 {
				h5 := p.Services["hive-"+strconv.Itoa(tc.topo.hives)]
				if h5.Hostname != h5.Name || *h5.Environment["RBEE_HIVE_ID"] != h5.Name {
					t.Errorf("generated hive: hostname %s, RBEE_HIVE_ID %s", h5.Hostname, *h5.Environment["RBEE_HIVE_ID"])
				}
				keyMount := false
				for _, v := range h5.Volumes {
					if strings.HasSuffix(v.Source, filepath.Join("hosts", h5.Name)) {
						keyMount = true
					}
				}
				if !keyMount {
					t.Errorf("generated hive mounts no host key of its own: %+v", h5.Volumes)
				}
				conf, err := os.ReadFile(filepath.Join(stateDir(h.name), "hives.conf"))
				if err != nil || strings.Count(string(conf), "[[hive]]") != tc.topo.hives {
					t.Errorf("hives.conf: %v\n%s", err, conf)
				}
			}
		})
	}
}

func TestLoadProjectWithServices(t *testing.T) {
	repo, err := findRepoDir()
	if err != nil {
		t.Skip(err)
	}
	h := &Harness{cfg: defaultConfig(), topo: FullStack, name: projectName("unit"), repoDir: repo, started: time.Now()}
	h.cfg.services = []string{"worker-1"}
	p, err := h.loadProject(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// worker-1 depends on hub: both come up, nothing else.
	if got := strings.Join(sortedNames(p), ","); got != "hub,worker-1" {
		t.Fatalf("services = %s", got)
	}
	h.cfg.services = []string{"nope"}
	if _, err := h.loadProject(context.Background()); err == nil || !strings.Contains(err.Error(), `unknown service "nope"`) {
		t.Fatalf("unknown service: %v", err)
	}
}

func TestHivesConf(t *testing.T) {
	got := hivesConf([]string{"hive-1", "hive-2"})
	for _, w := range []string{`alias       = "hive-1"`, `hostname    = "hive-2"`, `ssh_user    = "rbee"`, "hive_port   = 9000"} {
		if !strings.Contains(got, w) {
			t.Errorf("hives.conf lacks %q:\n%s", w, got)
		}
	}
}

func TestArtifactsDir(t *testing.T) {
	t.Setenv("RBEE_TEST_ARTIFACTS", "/tmp/art")
	if got := ArtifactsDir("/repo", "TestX/sub case"); got != "/tmp/art/TestX__sub_case" {
		t.Fatalf("ArtifactsDir = %s", got)
	}
	t.Setenv("RBEE_TEST_ARTIFACTS", "")
	if got := ArtifactsDir("/repo", "TestX"); got != "/repo/artifacts/TestX" {
		t.Fatalf("default ArtifactsDir = %s", got)
	}
}

func TestLatencyUnsupportedIsErrUnsupported(t *testing.T) {
	h := fakeHarness(t, "queen")
	no := false
	h.netemOK = &no
	err := h.Inject(context.Background(), PacketLatency("queen", time.Millisecond, 0))
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("PacketLatency without netem = %v, want ErrUnsupported", err)
	}
	if len(h.Faults()) != 0 {
		t.Fatal("unsupported latency was recorded")
	}
}

func TestShardSkip(t *testing.T) {
	cases := []struct {
		env  string
		topo Topology
		skip bool
		bad  bool
	}{
		{"", FullStack, false, false},
		{"all", Localhost, false, false},
		{"localhost", Localhost, false, false},
		{"localhost", MultiHive, true, false},
		{"multi-hive", MultiHiveN(5), false, false},
		{"multi-hive", FullStack, true, false},
		{"full-stack", FullStack, false, false},
		{"mars", Localhost, false, true},
	}
	for _, c := range cases {
		t.Setenv(ShardEnv, c.env)
		why, err := shardSkip(c.topo)
		if (err != nil) != c.bad || (why != "") != c.skip {
			t.Errorf("%s=%q, %s: skip %q err %v", ShardEnv, c.env, c.topo, why, err)
		}
	}
}
