package bench

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/rbee-dev/rbee/xtask/integration"
)

func TestComposeEnv(t *testing.T) {
	file := `ports:
    - "127.0.0.1:${RBEE_PUBLISH_QUEEN:-8500}:8500"
    - "127.0.0.1:${RBEE_PUBLISH_HIVE1_HTTP:-9001}:9000"
        ipv4_address: ${RBEE_QUEEN_IP:-172.20.0.10}
        ipv4_address: ${RBEE_HIVE1_IP:-172.20.0.20}
        - subnet: ${RBEE_SUBNET:-172.20.0.0/16}`
	env, err := ComposeEnv(file, netip.MustParsePrefix("10.201.7.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"RBEE_SUBNET": "10.201.7.0/24", "RBEE_PUBLISH_QUEEN": "0", "RBEE_PUBLISH_HIVE1_HTTP": "0",
		"RBEE_QUEEN_IP": "10.201.7.10", "RBEE_HIVE1_IP": "10.201.7.20"}
	if len(env) != len(want) {
		t.Errorf("env = %v, want %v", env, want)
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
}

func TestComposeEnvBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, file, subnet string
	}{
		{"not a /24", "${RBEE_PUBLISH_QUEEN:-8500}", "10.0.0.0/16"},
		{"IPv6", "${RBEE_PUBLISH_QUEEN:-8500}", "fd00::/24"},
		{"no rbee variables", "services: {}", "10.0.0.0/24"},
		{"bad default address", "${RBEE_QUEEN_IP:-172.20.0}", "10.0.0.0/24"},
		{"gateway octet", "${RBEE_QUEEN_IP:-172.20.0.1}", "10.0.0.0/24"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if env, err := ComposeEnv(tc.file, netip.MustParsePrefix(tc.subnet)); err == nil {
				t.Errorf("no error; env %v", env)
			}
		})
	}
}

// The real topology files: every variable the headers document is covered.
func TestComposeEnvTopologies(t *testing.T) {
	for _, topo := range integration.Topologies() {
		b, err := os.ReadFile(filepath.Join("..", "..", topo.File()))
		if err != nil {
			t.Fatal(err)
		}
		env, err := ComposeEnv(string(b), netip.MustParsePrefix("10.200.1.0/24"))
		if err != nil {
			t.Fatalf("%s: %v", topo, err)
		}
		if env["RBEE_PUBLISH_QUEEN"] != "0" || env["RBEE_QUEEN_IP"] != "10.200.1.10" {
			t.Errorf("%s: env %v", topo, env)
		}
	}
}

func TestPickSubnet(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	used := []netip.Prefix{netip.MustParsePrefix("172.17.0.0/16"), netip.MustParsePrefix("10.200.0.0/14")}
	for i := 0; i < 50; i++ {
		p, err := PickSubnet(used, r)
		if err != nil {
			t.Fatal(err)
		}
		if p.Bits() != 24 || !netip.MustParsePrefix("10.204.0.0/14").Overlaps(p) {
			t.Fatalf("PickSubnet = %v, want a /24 in 10.204.0.0/14 (10.200/14 is used)", p)
		}
	}
	if _, err := PickSubnet([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, r); err == nil {
		t.Error("every /24 used: no error")
	}
}
