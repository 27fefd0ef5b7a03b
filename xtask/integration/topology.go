package integration

import (
	"fmt"
	"path"
	"strconv"
	"strings"
)

// MaxHives is the largest hive count MultiHiveN accepts: keys/ holds host
// keys for hive-1 … hive-8 only.
const MaxHives = 8

// A Topology names a set of services: one of the compose files under
// tests/docker/, or (MultiHiveN) the multi-hive file widened in code.
// The zero Topology is invalid; New reports it as unknown.
type Topology struct {
	name    string // "localhost", "multi-hive", "full-stack", "multi-hive-5"
	file    string // compose file, relative to tests/docker/
	configs string // the queen's configuration directory, relative to the repository root
	shard   string // the RBEE_TOPOLOGY shard whose runs include this topology's tests
	hives   int    // >0: generate this many hive-N services from hive-1
}

// registry is every topology of tests/docker/, in the order listings show
// them. Everything that names topologies derives from it: ParseTopology,
// the RBEE_TOPOLOGY shards, the Mage targets, run-tests.sh, the CI jobs.
var registry []Topology

// register adds t to the registry and returns it. Adding a topology is one
// register line below, its compose file in tests/docker/ and its queen
// configuration in configs/<name>/; registry_test.go checks the three agree.
func register(t Topology) Topology {
	registry = append(registry, t)
	return t
}

// The topologies of tests/docker/.
var (
	// Localhost is queen + hive-localhost (docker-compose.localhost.yml).
	Localhost = register(Topology{name: "localhost", file: "docker-compose.localhost.yml", configs: "configs/localhost", shard: "localhost"})
	// MultiHive is queen + hive-1 + hive-2 (docker-compose.multi-hive.yml).
	MultiHive = register(Topology{name: "multi-hive", file: "docker-compose.multi-hive.yml", configs: "configs/multi-hive", shard: "multi-hive"})
	// FullStack is queen, hive-1, hive-2, hub, worker-1, worker-2
	// (docker-compose.full-stack.yml).
	FullStack = register(Topology{name: "full-stack", file: "docker-compose.full-stack.yml", configs: "configs/full-stack", shard: "full-stack"})
)

// Topologies returns the registered topologies (MultiHiveN variants are
// not listed: they are MultiHive widened in code).
func Topologies() []Topology { return append([]Topology(nil), registry...) }

// TopologyNames returns the registered topologies' names.
func TopologyNames() []string {
	names := make([]string, len(registry))
	for i, t := range registry {
		names[i] = t.name
	}
	return names
}

// MultiHiveN is the multi-hive topology with n hives (hive-1 … hive-n), each a
// copy of hive-1 with its own name, address and host key, and the queen's
// hives.conf generated to list all of them. n must be 1 … MaxHives; New
// reports a bad n.
func MultiHiveN(n int) Topology {
	t := MultiHive
	t.name, t.hives = MultiHive.name+"-"+strconv.Itoa(n), n
	return t
}

// String returns the topology's name, as ParseTopology accepts it.
func (t Topology) String() string {
	if t.name == "" {
		return "<unknown topology>"
	}
	return t.name
}

// File is the topology's compose file, relative to the repository root
// (tests/docker/docker-compose.localhost.yml).
func (t Topology) File() string { return path.Join("tests", "docker", t.file) }

// Configs is the directory of the queen's configuration (queen.toml,
// hives.conf) the compose file mounts, relative to the repository root.
func (t Topology) Configs() string { return t.configs }

// Shard is the value of RBEE_TOPOLOGY (and the `test:topology` argument)
// whose runs include the tests on this topology; MultiHiveN belongs to
// MultiHive's.
func (t Topology) Shard() string { return t.shard }

// ParseTopology maps a name (a registered topology's, or "multi-hive-N") to
// its Topology; Mage targets use it.
func ParseTopology(name string) (Topology, error) {
	for _, t := range registry {
		if t.name == name {
			return t, nil
		}
	}
	if rest, ok := strings.CutPrefix(name, MultiHive.name+"-"); ok {
		n, err := strconv.Atoi(rest)
		if err == nil {
			t := MultiHiveN(n)
			return t, t.validate()
		}
	}
	return Topology{}, fmt.Errorf("unknown topology %q (want %s or %s-N with N in 1…%d)", name, strings.Join(TopologyNames(), ", "), MultiHive.name, MaxHives)
}

func (t Topology) validate() error {
	switch {
	case t.file == "":
		return fmt.Errorf("unknown topology %s: use one of %s (the exported variables) or MultiHiveN(n)", t, strings.Join(TopologyNames(), ", "))
	case t.hives < 0 || (t.hives == 0 && strings.HasPrefix(t.name, MultiHive.name+"-")) || t.hives > MaxHives:
		return fmt.Errorf("topology %s: hive count must be 1…%d", t, MaxHives)
	}
	return nil
}
