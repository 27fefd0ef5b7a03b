#!/usr/bin/env bash
# Run the Docker suites' tests of one topology, or all of them. Thin wrapper
# over the Mage test targets, which run setup first (a no-op when nothing
# changed), write JUnit XML to test-results/ and print a summary table.
# The topologies are those of the registry in xtask/integration/topology.go
# (`go run mage.go topologies` lists them); test:topology checks the name.
#   tests/docker/scripts/run-tests.sh localhost
set -euo pipefail
cd "$(dirname "$0")/../../.."

topology=${1:-}
case "$topology" in
    "") echo "usage: $0 TOPOLOGY|all   (topologies: go run mage.go topologies)" >&2; exit 2 ;;
    all) exec go run mage.go test:docker ;;
    *) exec go run mage.go test:topology "$topology" ;;
esac
