#!/usr/bin/env bash
# Remove every container, network, volume and image labelled
# dev.rbee.project=rbee-netest (and nothing else). Thin wrapper over `mage cleanup`.
#   tests/docker/scripts/cleanup.sh                # everything, images too
#   tests/docker/scripts/cleanup.sh --keep-images  # containers, networks, volumes only
set -euo pipefail
cd "$(dirname "$0")/../../.."
case "${1:-}" in
    "") exec go run mage.go cleanup:all ;;
    --keep-images) exec go run mage.go cleanup:stack ;;
    *) echo "usage: $0 [--keep-images]" >&2; exit 2 ;;
esac
