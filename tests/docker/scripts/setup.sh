#!/usr/bin/env bash
# One-time (and idempotent) preparation for the Docker tests: SSH keys,
# static binaries, base and service images. Thin wrapper over `mage setup`.
#   tests/docker/scripts/setup.sh        # quiet: a line per step
#   tests/docker/scripts/setup.sh -v     # stream build output
set -euo pipefail
cd "$(dirname "$0")/../../.."
exec go run mage.go "$@" setup
