#!/usr/bin/env bash
# Runs a command inside a private network namespace whose only interface is
# lo, so tests and benchmarks can only ever reach 127.0.0.1/::1 (TURN relay
# probes to 10.0.0.1 fail locally instead of leaving the machine).
set -euo pipefail
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null 2>&1; then
  exec unshare -n sh -c 'ip link set lo up && exec "$@"' sh "$@"
fi
if [ "${CI:-}" = "true" ]; then
  echo "netns: CI must run as root with unshare available" >&2
  exit 1
fi
echo "netns: not root; running without a private network namespace (tests that need one re-run themselves or fail)" >&2
exec "$@"
