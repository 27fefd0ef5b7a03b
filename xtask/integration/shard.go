package integration

import (
	"fmt"
	"os"
	"strings"
)

// ShardEnv names the environment variable that shards the Docker suites by
// topology: with RBEE_TOPOLOGY=localhost, Start skips every test whose
// topology is not localhost (and likewise for multi-hive, which includes
// MultiHiveN, and full-stack). `mage test:localhost` and CI's matrix jobs
// set it; unset, every test runs.
const ShardEnv = "RBEE_TOPOLOGY"

// shardSkip returns why a test on topo does not belong to the shard named
// in RBEE_TOPOLOGY, or "" when it does (or no shard is set).
func shardSkip(topo Topology) (string, error) {
	want := strings.TrimSpace(os.Getenv(ShardEnv))
	if want == "" || want == "all" {
		return "", nil
	}
	switch want {
	case Localhost.name, MultiHive.name, FullStack.name:
	default:
		return "", fmt.Errorf("%s=%q: want localhost, multi-hive, full-stack or all", ShardEnv, want)
	}
	family := topo.name
	if topo.hives > 0 {
		family = MultiHive.name
	}
	if family == want {
		return "", nil
	}
	return fmt.Sprintf("needs topology %s; this run is the %s shard (%s)", topo, want, ShardEnv), nil
}
