#!/usr/bin/env bash
# Runs `make test` as a normal (non-root) user, as a contributor would: the
# loopback-only namespace then comes from `unshare -rn` (user namespaces)
# instead of root's `unshare -n`. CI calls it after the root run; it needs
# root itself only to create the user and hand it a copy of the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
user=${ICEY_TEST_USER:-icey-test}
if [ "$(id -u)" -ne 0 ]; then
  exec make test
fi
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
home=$(getent passwd "$user" | cut -d: -f6)
src="$home/icey-server"
rm -rf "$src"
# The committed tree, as a fresh clone has it.
git clone --quiet --no-hardlinks "$PWD" "$src"
chown -R "$user:" "$src"
# The race detector and the fuzz pass already ran as root on the same tree;
# this run proves every test works without root privileges.
su "$user" -c "cd '$src' && PATH='$PATH' CI='${CI:-}' make test TESTFLAGS='-count=1 -timeout 12m' FUZZ=0"
