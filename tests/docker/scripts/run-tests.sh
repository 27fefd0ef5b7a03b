#!/usr/bin/env bash
# Run the Docker suites against one topology (localhost | multi-hive | full-stack)
# or all of them. Thin wrapper: `mage setup` (a no-op when nothing changed),
# then `go test` on the suites in xtask/tests/docker with RBEE_TOPOLOGY set.
#   tests/docker/scripts/run-tests.sh localhost [go test flags…]
set -euo pipefail
cd "$(dirname "$0")/../../.."

topology=${1:-}
case "$topology" in
    localhost|multi-hive|full-stack|all) shift ;;
    *) echo "usage: $0 localhost|multi-hive|full-stack|all [go test flags…]" >&2; exit 2 ;;
esac

go run mage.go setup

if ! ls xtask/tests/docker/*/*.go >/dev/null 2>&1; then
    echo "run-tests: no Docker suites yet (expected under xtask/tests/docker/<category>)" >&2
    exit 1
fi
export RBEE_TOPOLOGY=$topology
[ "$topology" = all ] && unset RBEE_TOPOLOGY
exec go test -count=1 -timeout 30m "$@" ./xtask/tests/docker/...
