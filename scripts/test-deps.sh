#!/usr/bin/env bash
# Installs what the tests need when it is missing: Debian's chromium (real
# browser tests) and ffmpeg (test media, transcoding). Needs root for apt-get.
set -euo pipefail
missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -eq 0 ]; then
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
