#!/bin/bash
# Standalone worker entrypoint: fetch the model from the model hub, verify
# it, then run llm-worker-rbee as user rbee (exec, so SIGTERM reaches it).
#
# Environment (defaults in brackets):
#   RBEE_MODEL        [rbee/tiny-ngram:model.bin]  org/repo:file on the hub
#   HF_ENDPOINT       [http://hub:8080]            hub base URL
#   RBEE_WORKER_ID    [hostname]
#   RBEE_WORKER_PORT  [9100]
#   RBEE_DEVICE       [cpu:0]
#   RBEE_QUEEN_URL    [none: no heartbeats]
#   RBEE_HIVE_ID      [standalone]                 reported in heartbeats
#   RBEE_WORKER_ADVERTISE_URL [http://<hostname>:<port>]
#   RBEE_HEARTBEAT_INTERVAL   [worker default]
#   RBEE_TOKEN_DELAY          [worker default]     pause between generated tokens
# Mounts:
#   /etc/rbee/keys/cluster.key  the cluster secret (copied 0600 for rbee): signs heartbeats,
#                               and the worker's bearer token is derived from it
set -euo pipefail

log() { echo "worker-entrypoint: $*" >&2; }

model=${RBEE_MODEL:-rbee/tiny-ngram:model.bin}
hub=${HF_ENDPOINT:-http://hub:8080}
port=${RBEE_WORKER_PORT:-9100}
worker_id=${RBEE_WORKER_ID:-$(hostname)}

case "$model" in
    */*:*) ;;
    *) log "RBEE_MODEL=$model is not org/repo:file"; exit 2 ;;
esac
repo=${model%%:*}
file=${model#*:}
dir=/var/lib/rbee/models/${repo//\//--}--$file
dest=$dir/model.bin
url=$hub/$repo/resolve/main/$file

if [ ! -s "$dest" ]; then
    mkdir -p "$dir"
    headers=$(mktemp)
    log "downloading $model from $url"
    # The hub may still be starting: retry refused connections for ~60 s.
    curl -fsSL --retry 60 --retry-delay 1 --retry-connrefused --connect-timeout 2 -m 120 \
        -D "$headers" -o "$dest.part" "$url"
    want=$(grep -i '^x-checksum-sha256:' "$headers" | tail -n1 | awk '{print $2}' | tr -d '\r"' || true)
    if [ -n "$want" ]; then
        got=$(sha256sum "$dest.part" | awk '{print $1}')
        if [ "$got" != "$want" ]; then
            log "sha256 mismatch for $model: got $got, hub says $want"
            exit 1
        fi
    else
        log "hub sent no X-Checksum-Sha256; only the length was checked"
    fi
    mv "$dest.part" "$dest"
    rm -f "$headers"
    chown -R rbee:rbee "$dir"
fi

args=(--worker-id "$worker_id" --model "$dest" --model-id "$model" --device "${RBEE_DEVICE:-cpu:0}"
      --port "$port" --hive-id "${RBEE_HIVE_ID:-standalone}"
      --advertise-url "${RBEE_WORKER_ADVERTISE_URL:-http://$(hostname):$port}")
[ -n "${RBEE_QUEEN_URL:-}" ] && args+=(--queen-url "$RBEE_QUEEN_URL")
[ -n "${RBEE_HEARTBEAT_INTERVAL:-}" ] && args+=(--heartbeat-interval "$RBEE_HEARTBEAT_INTERVAL")
[ -n "${RBEE_TOKEN_DELAY:-}" ] && args+=(--token-delay "$RBEE_TOKEN_DELAY")
if [ -f /etc/rbee/keys/cluster.key ]; then
    install -d -m 0700 -o rbee -g rbee /home/rbee/.config/rbee
    install -m 0600 -o rbee -g rbee /etc/rbee/keys/cluster.key /home/rbee/.config/rbee/cluster.key
    args+=(--secret-file /home/rbee/.config/rbee/cluster.key)
else
    log "WARNING: /etc/rbee/keys/cluster.key not mounted; heartbeats are unsigned"
fi

log "starting llm-worker-rbee ${args[*]}"
exec setpriv --reuid=rbee --regid=rbee --init-groups env HOME=/home/rbee USER=rbee \
    /usr/local/bin/llm-worker-rbee "${args[@]}"
