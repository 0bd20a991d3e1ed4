#!/usr/bin/env bash
# Runs a command inside a private network namespace whose only interface is
# lo, so tests and benchmarks can only ever reach 127.0.0.1/::1 (TURN relay
# probes to 10.0.0.1 fail locally instead of leaving the machine).
# As root: `unshare -n`. As a normal user: `unshare -rn`, a network namespace
# inside a user namespace that maps the user to root (no sudo needed where
# the kernel allows unprivileged user namespaces, as Debian's does).
set -euo pipefail
if ! command -v unshare >/dev/null 2>&1; then
  echo "netns: unshare (util-linux) is missing: apt-get install util-linux, or run 'make deps' as root" >&2
  exit 1
fi
flags=-n
[ "$(id -u)" -eq 0 ] || flags=-rn
if ! unshare "$flags" true 2>/dev/null; then
  echo "netns: 'unshare $flags' is not permitted on this system, so the tests cannot get a loopback-only network." >&2
  echo "netns: run them as root (sudo make test), or allow unprivileged user namespaces:" >&2
  echo "netns:   sudo sysctl -w kernel.unprivileged_userns_clone=1   (Debian/Ubuntu)" >&2
  echo "netns:   sudo sysctl -w user.max_user_namespaces=10000        (others)" >&2
  exit 1
fi
exec unshare "$flags" sh -c 'ip link set lo up && exec "$@"' sh "$@"
