#!/bin/bash
# Hive container health: sshd is listening on port 22, and, when the
# container autostarts the hive, GET /health on the hive port succeeds.
# The SSH check looks at the listening socket instead of connecting: a probe
# connection every second would fill sshd's log with "Connection closed
# [preauth]" lines that bury what the tests need to read.
# (A test that stops the autostarted hive makes the container unhealthy;
# nothing restarts it.)
set -uo pipefail
ss -Hltn 'sport = :22' | grep -q LISTEN || exit 1
if [ "${RBEE_HIVE_AUTOSTART:-1}" = 1 ]; then
    curl -fsS -m 2 "http://127.0.0.1:${RBEE_HIVE_PORT:-9000}/health" >/dev/null || exit 1
fi
exit 0
