#!/usr/bin/env bash
# Installs what the tests need when it is missing: Debian's chromium and
# firefox-esr (real browser tests), ffmpeg (test media, transcoding), node
# and npm (the Firefox driver), and the driver's npm packages
# (internal/firefoxtest/node_modules, pinned by its package-lock.json; no
# browser download). apt-get needs root; the npm part runs as the caller.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Firefox driver's packages: `npm ci` when node_modules is missing or
# older than the lock file. PUPPETEER_SKIP_DOWNLOAD and --ignore-scripts:
# the tests use Debian's firefox-esr, never a downloaded browser.
firefox_driver() {
  local dir=internal/firefoxtest
  if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "test-deps: npm ci in $dir"
    (cd "$dir" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  fi
}

missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v firefox-esr >/dev/null 2>&1 || missing+=(firefox-esr)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -eq 0 ]; then
  firefox_driver
  exit 0
fi
pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
echo "test-deps: installing $pkgs"
export DEBIAN_FRONTEND=noninteractive
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "test-deps: $pkgs must be installed once by root; run:" >&2
    echo "test-deps:   sudo apt-get install -y --no-install-recommends $pkgs" >&2
    echo "test-deps: then 'make test' runs as yourself (it needs no root after that)." >&2
    exit 1
  fi
fi
"${as_root[@]}" apt-get update -qq
# shellcheck disable=SC2086
"${as_root[@]}" apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
firefox_driver
