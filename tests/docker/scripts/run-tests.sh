#!/usr/bin/env bash
# Run the Docker suites' tests of one topology (localhost | multi-hive |
# full-stack) or all of them. Thin wrapper over the Mage test targets, which
# run setup first (a no-op when nothing changed), write JUnit XML to
# test-results/ and print a summary table.
#   tests/docker/scripts/run-tests.sh localhost
set -euo pipefail
cd "$(dirname "$0")/../../.."

topology=${1:-}
case "$topology" in
    localhost|multi-hive|full-stack|all) ;;
    *) echo "usage: $0 localhost|multi-hive|full-stack|all" >&2; exit 2 ;;
esac

case "$topology" in
    localhost)  exec go run mage.go test:localhost ;;
    multi-hive) exec go run mage.go test:multiHive ;;
    full-stack) exec go run mage.go test:fullStack ;;
    all)        exec go run mage.go test:docker ;;
esac
