#!/bin/bash
# Hive container entrypoint (PID 2, under tini). Prepares the machine the
# queen manages over SSH, then becomes sshd.
#
# Environment (defaults in brackets):
#   RBEE_HIVE_PREINSTALLED [1]  copy /usr/local/share/rbee/rbee-hive to ~rbee/.local/bin/rbee-hive
#   RBEE_HIVE_AUTOSTART    [1]  start it as rbee, pid in ~rbee/.local/state/rbee/rbee-hive.pid
#   RBEE_HIVE_ID           [hostname]              hive_id in hive.toml (use the queen's alias)
#   RBEE_HIVE_PORT         [9000]                  port
#   RBEE_QUEEN_URL         [none]                  queen_url (heartbeats)
#   RBEE_HIVE_ADVERTISE_URL [http://<hostname>:<port>]
#   RBEE_GPUS              [0]                     simulated GPUs
#   RBEE_HEARTBEAT_INTERVAL, RBEE_WORKER_PORTS, HF_ENDPOINT, RBEE_HIVE_DATA_DIR [~/.local/share/rbee]
# Mounts:
#   /etc/rbee/keys/test_id_rsa.pub            -> ~rbee/.ssh/authorized_keys
#   /etc/rbee/keys/cluster.key                -> ~rbee/.config/rbee/cluster.key (0600), only on a
#                                                 provisioned machine (RBEE_HIVE_PREINSTALLED=1); a bare
#                                                 machine gets it from the queen's hive_start
#   /etc/ssh/keys/ssh_host_ed25519_key{,.pub} -> /etc/ssh/ (copied: bind mounts keep host owners and modes,
#                                                 which sshd rejects)
set -euo pipefail

log() { echo "hive-entrypoint: $*" >&2; }

RBEE_HOME=/home/rbee
state_dir=$RBEE_HOME/.local/state/rbee
hive_id=${RBEE_HIVE_ID:-$(hostname)}
port=${RBEE_HIVE_PORT:-9000}
advertise=${RBEE_HIVE_ADVERTISE_URL:-http://$(hostname):$port}

# --- SSH host key -----------------------------------------------------------
if [ -f /etc/ssh/keys/ssh_host_ed25519_key ]; then
    install -m 0600 -o root -g root /etc/ssh/keys/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key
    if [ -f /etc/ssh/keys/ssh_host_ed25519_key.pub ]; then
        install -m 0644 -o root -g root /etc/ssh/keys/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ed25519_key.pub
    fi
else
    # No mounted key: the queen's known_hosts will not match. Say so loudly.
    log "WARNING: /etc/ssh/keys/ssh_host_ed25519_key not mounted; generating a throwaway host key"
    ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
fi

# --- authorized_keys for rbee ----------------------------------------------
install -d -m 0700 -o rbee -g rbee "$RBEE_HOME/.ssh"
if [ -f /etc/rbee/keys/test_id_rsa.pub ]; then
    install -m 0600 -o rbee -g rbee /etc/rbee/keys/test_id_rsa.pub "$RBEE_HOME/.ssh/authorized_keys"
else
    log "WARNING: /etc/rbee/keys/test_id_rsa.pub not mounted; nobody can log in over SSH"
fi

# --- machine-local hive config (~/.config/rbee/hive.toml) -------------------
for d in .config/rbee .local/bin .local/state/rbee .local/share/rbee; do
    mkdir -p "$RBEE_HOME/$d"
done
chown -R rbee:rbee "$RBEE_HOME/.config" "$RBEE_HOME/.local"
toml_str() { printf '%s = "%s"\n' "$1" "$2"; }
{
    echo "# written by the hive container entrypoint from its environment"
    toml_str hive_id "$hive_id"
    echo "port = $port"
    [ -n "${RBEE_QUEEN_URL:-}" ] && toml_str queen_url "$RBEE_QUEEN_URL"
    toml_str advertise_url "$advertise"
    toml_str data_dir "${RBEE_HIVE_DATA_DIR:-$RBEE_HOME/.local/share/rbee}"
    [ -n "${RBEE_WORKER_PORTS:-}" ] && toml_str worker_ports "$RBEE_WORKER_PORTS"
    echo "gpus = ${RBEE_GPUS:-0}"
    [ -n "${RBEE_HEARTBEAT_INTERVAL:-}" ] && toml_str heartbeat_interval "$RBEE_HEARTBEAT_INTERVAL"
    [ -n "${HF_ENDPOINT:-}" ] && toml_str hf_endpoint "$HF_ENDPOINT"
    toml_str worker_binary "${RBEE_WORKER_BINARY:-/usr/local/bin/llm-worker-rbee}"
} > "$RBEE_HOME/.config/rbee/hive.toml"
chown rbee:rbee "$RBEE_HOME/.config/rbee/hive.toml"

# --- preinstall / autostart -------------------------------------------------
if [ "${RBEE_HIVE_PREINSTALLED:-1}" = 1 ]; then
    install -m 0755 -o rbee -g rbee /usr/local/share/rbee/rbee-hive "$RBEE_HOME/.local/bin/rbee-hive"
    # The cluster secret (heartbeat signatures, the queen's calls, worker
    # tokens). rbee-hive reads ~/.config/rbee/cluster.key by default and
    # refuses a copy that others can read, so copy it with rbee's owner.
    if [ -f /etc/rbee/keys/cluster.key ]; then
        install -d -m 0700 -o rbee -g rbee "$RBEE_HOME/.config/rbee"
        install -m 0600 -o rbee -g rbee /etc/rbee/keys/cluster.key "$RBEE_HOME/.config/rbee/cluster.key"
    else
        log "WARNING: /etc/rbee/keys/cluster.key not mounted; this hive cannot authenticate to the queen"
    fi
fi
if [ "${RBEE_HIVE_AUTOSTART:-1}" = 1 ]; then
    if [ ! -x "$RBEE_HOME/.local/bin/rbee-hive" ]; then
        log "RBEE_HIVE_AUTOSTART=1 but ~/.local/bin/rbee-hive is absent (RBEE_HIVE_PREINSTALLED=0?)"
        exit 1
    fi
    # The same shape as the queen's hive_start: detached, log appended, pid
    # recorded. Flags are not needed: hive.toml holds the settings. The pid
    # must be rbee-hive's own (a backgrounded `cd && nohup` list would record
    # a subshell, and hive_stop would kill the wrong process).
    setpriv --reuid=rbee --regid=rbee --init-groups \
        env -i HOME=$RBEE_HOME USER=rbee LOGNAME=rbee SHELL=/bin/bash PATH=/usr/local/bin:/usr/bin:/bin \
        bash -c 'cd ~ || exit 1
                 nohup ~/.local/bin/rbee-hive >> ~/.local/state/rbee/rbee-hive.log 2>&1 < /dev/null &
                 echo $! > ~/.local/state/rbee/rbee-hive.pid'
    log "rbee-hive started as rbee (pid $(cat "$state_dir/rbee-hive.pid"), log $state_dir/rbee-hive.log)"
fi

log "starting sshd (hive $hive_id)"
exec /usr/sbin/sshd -D -e
