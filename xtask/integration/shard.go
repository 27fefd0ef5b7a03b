package integration

import (
	"fmt"
	"os"
	"slices"
	"strings"
)

// ShardEnv names the environment variable that selects the Docker tests of
// one topology: with RBEE_TOPOLOGY=localhost, Start skips every test whose
// topology's shard is not localhost (MultiHiveN is in multi-hive's). `mage
// test:topology NAME` sets it; unset or "all", every test runs.
const ShardEnv = "RBEE_TOPOLOGY"

// Shards returns the values RBEE_TOPOLOGY accepts besides "all": the
// registered topologies' shards, each once, in registry order.
func Shards() []string {
	var out []string
	for _, t := range registry {
		if !slices.Contains(out, t.shard) {
			out = append(out, t.shard)
		}
	}
	return out
}

// shardSkip returns why a test on topo does not belong to the shard named
// in RBEE_TOPOLOGY, or "" when it does (or no shard is set).
func shardSkip(topo Topology) (string, error) {
	return shardSkipFor(strings.TrimSpace(os.Getenv(ShardEnv)), topo)
}

func shardSkipFor(want string, topo Topology) (string, error) {
	if want == "" || want == "all" {
		return "", nil
	}
	if !slices.Contains(Shards(), want) {
		return "", fmt.Errorf("%s=%q: want %s or all", ShardEnv, want, strings.Join(Shards(), ", "))
	}
	if topo.shard == want {
		return "", nil
	}
	return fmt.Sprintf("needs topology %s; this run is the %s shard (%s)", topo, want, ShardEnv), nil
}
