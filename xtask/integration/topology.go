package integration

import (
	"fmt"
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
	name  string // "localhost", "multi-hive", "full-stack", "multi-hive-5"
	file  string // compose file, relative to tests/docker/
	hives int    // >0: generate this many hive-N services from hive-1
}

// The topologies of tests/docker/.
var (
	// Localhost is queen + hive-localhost (docker-compose.localhost.yml).
	Localhost = Topology{name: "localhost", file: "docker-compose.localhost.yml"}
	// MultiHive is queen + hive-1 + hive-2 (docker-compose.multi-hive.yml).
	MultiHive = Topology{name: "multi-hive", file: "docker-compose.multi-hive.yml"}
	// FullStack is queen, hive-1, hive-2, hub, worker-1, worker-2
	// (docker-compose.full-stack.yml).
	FullStack = Topology{name: "full-stack", file: "docker-compose.full-stack.yml"}
)

// MultiHiveN is the multi-hive topology with n hives (hive-1 … hive-n), each a
// copy of hive-1 with its own name, address and host key, and the queen's
// hives.conf generated to list all of them. n must be 1 … MaxHives; New
// reports a bad n.
func MultiHiveN(n int) Topology {
	return Topology{name: "multi-hive-" + strconv.Itoa(n), file: MultiHive.file, hives: n}
}

// String returns the topology's name, as ParseTopology accepts it.
func (t Topology) String() string {
	if t.name == "" {
		return "<unknown topology>"
	}
	return t.name
}

// ParseTopology maps a name ("localhost", "multi-hive", "full-stack",
// "multi-hive-N") to its Topology; Mage targets use it.
func ParseTopology(name string) (Topology, error) {
	switch name {
	case Localhost.name:
		return Localhost, nil
	case MultiHive.name:
		return MultiHive, nil
	case FullStack.name:
		return FullStack, nil
	}
	if rest, ok := strings.CutPrefix(name, "multi-hive-"); ok {
		n, err := strconv.Atoi(rest)
		if err == nil {
			t := MultiHiveN(n)
			return t, t.validate()
		}
	}
	return Topology{}, fmt.Errorf("unknown topology %q (want localhost, multi-hive, full-stack or multi-hive-N with N in 1…%d)", name, MaxHives)
}

func (t Topology) validate() error {
	switch {
	case t.file == "":
		return fmt.Errorf("unknown topology %s: use Localhost, MultiHive, FullStack or MultiHiveN(n)", t)
	case t.hives < 0 || (t.hives == 0 && strings.HasPrefix(t.name, "multi-hive-")) || t.hives > MaxHives:
		return fmt.Errorf("topology %s: hive count must be 1…%d", t, MaxHives)
	}
	return nil
}
