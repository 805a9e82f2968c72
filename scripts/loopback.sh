#!/usr/bin/env bash
# Run a command in a fresh network namespace that holds only the loopback interface, so no test
# or benchmark traffic can leave this machine. Falls back to running it as is (the code also pins
# ICE to 127.0.0.1 with no STUN servers) where namespaces are not permitted.
set -euo pipefail
if [ "${VOICE_AGENT_NO_NETNS:-}" != "1" ] && command -v unshare >/dev/null && unshare -n true 2>/dev/null; then
  exec unshare -n bash -c 'ip link set lo up && exec "$@"' loopback "$@"
fi
echo "loopback.sh: network namespaces unavailable; relying on ICE pinned to 127.0.0.1" >&2
exec "$@"
