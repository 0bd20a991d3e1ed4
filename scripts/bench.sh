#!/usr/bin/env bash
# The reproducible fan-out benchmark behind docs/performance.md. `make bench`
# runs it inside a loopback-only network namespace (scripts/netns.sh).
#
# For each GOP variant (1 s, 4 s) of a 720p30 2 Mb/s H.264 + Opus file it
# starts bin/icey-server on 127.0.0.1 with that file as the source and runs
# bin/icey-bench at each viewer count, restarting the server for every point
# so each starts from the same memory baseline. Results:
#   bench-results/bench-<stamp>.txt    the tables, then one summary table
#   bench-results/bench-<stamp>.jsonl  one JSON line per point
#
# Knobs (environment):
#   VIEWERS="50 100 200 400"  GOPS="1 4"  DURATION=20s  RAMP=25  PORT=4610
#   SERVER=bin/icey-server    SERVER_ARGS=""   (extra server flags)
#   MAX_SESSIONS=1000  written to the server's config.json (the default cap
#                      of 200 sessions would answer 503 at the 400 point)
#   PPROF_URL=""   base URL of the server's pprof endpoint (e.g.
#                  http://127.0.0.1:6060, with SERVER_ARGS="--pprof-listen
#                  127.0.0.1:6060"); when set, a CPU profile of the window
#                  and a heap profile from its middle are saved for
#                  PROFILE_AT viewers (default 200).
#   BENCH_ARGS=""  extra icey-bench flags (e.g. "-nack=false -rcvbuf 0" for a
#                  generator that neither NACKs nor enlarges its sockets)
#   SKIP_BUILD=1   use the binaries already in bin/
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench-results
MEDIA=$OUT/media
VIEWERS=${VIEWERS:-"50 100 200 400"}
GOPS=${GOPS:-"1 4"}
DURATION=${DURATION:-20s}
RAMP=${RAMP:-25}
PORT=${PORT:-4610}
SERVER=${SERVER:-$ROOT/bin/icey-server}
SERVER_ARGS=${SERVER_ARGS:-}
BENCH_ARGS=${BENCH_ARGS:-}
MAX_SESSIONS=${MAX_SESSIONS:-1000}
PPROF_URL=${PPROF_URL:-}
PROFILE_AT=${PROFILE_AT:-200}
STAMP=$(date -u +%Y%m%d-%H%M%S)
TXT=$OUT/bench-$STAMP.txt
JSONL=$OUT/bench-$STAMP.jsonl
mkdir -p "$MEDIA"

# One 60 s clip per GOP, encoded once and cached: baseline profile, no
# B-frames, constant GOP (no scene-cut keyframes), 2 Mb/s CBR-ish, Opus.
clip() {
  local gop=$1 f=$MEDIA/720p30-2M-gop${1}s.mp4
  if [ ! -s "$f" ]; then
    echo "bench: encoding $f (once)" >&2
    ffmpeg -hide_banner -loglevel error -y \
      -f lavfi -i testsrc2=size=1280x720:rate=30 \
      -f lavfi -i sine=frequency=440:sample_rate=48000 -t 60 \
      -c:v libx264 -profile:v baseline -preset veryfast -tune zerolatency -pix_fmt yuv420p \
      -g $((30 * gop)) -keyint_min $((30 * gop)) -sc_threshold 0 -bf 0 \
      -b:v 2M -maxrate 2M -bufsize 2M \
      -c:a libopus -b:a 64k -ac 2 -movflags +faststart "$f.tmp.mp4"
    mv "$f.tmp.mp4" "$f"
  fi
  echo "$f"
}

if [ -z "${SKIP_BUILD:-}" ]; then
  # The namespace has no network: build from the module cache only.
  echo "bench: building" >&2
  GOPROXY=off CGO_ENABLED=0 go build -trimpath -o bin/icey-server ./cmd/icey-server
  GOPROXY=off CGO_ENABLED=0 go build -trimpath -o bin/icey-bench ./cmd/icey-bench
fi

SRV_PID=
RUNDIR=
stop_server() {
  if [ -n "$SRV_PID" ] && kill -0 "$SRV_PID" 2>/dev/null; then
    kill -TERM "$SRV_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
  fi
  SRV_PID=
  if [ -n "$RUNDIR" ]; then rm -rf "$RUNDIR"; RUNDIR=; fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM # exit (running the EXIT trap), do not carry on

start_server() {
  local src=$1 log=$2
  RUNDIR=$(mktemp -d "$OUT/run.XXXXXX") # the server's cwd: its config.json, anything it writes
  # every generated viewer comes from one address: lift the per-client
  # pending bound (a real audience comes from many addresses)
  printf '{"webrtc": {"maxSessions": %d, "maxPendingPerClient": %d}}\n' "$MAX_SESSIONS" "$MAX_SESSIONS" >"$RUNDIR/config.json"
  # shellcheck disable=SC2086
  (cd "$RUNDIR" && exec "$SERVER" --host 127.0.0.1 --port "$PORT" --no-turn \
    --source "$src" --log-level warn $SERVER_ARGS) >"$log" 2>&1 &
  SRV_PID=$!
  for _ in $(seq 150); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$PORT/api/ready" 2>/dev/null; then
      sleep 2 # let the source reach its steady state before the baseline
      return 0
    fi
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.2
  done
  echo "bench: server did not become ready; log:" >&2
  tail -20 "$log" >&2
  return 1
}

{
  echo "# icey-server fan-out benchmark $STAMP"
  echo "# $(uname -srm), $(nproc) cores, $(go version | cut -d' ' -f3)"
  echo "# viewers: $VIEWERS; GOPs: $GOPS s; window $DURATION; ramp $RAMP/s; server $SERVER $SERVER_ARGS; bench $BENCH_ARGS"
} | tee "$TXT"

for gop in $GOPS; do
  src=$(clip "$gop")
  for n in $VIEWERS; do
    log=$OUT/server-$STAMP-gop${gop}s-$n.log
    start_server "$src" "$log"
    prof_pid=
    if [ -n "$PPROF_URL" ] && [ "$n" = "$PROFILE_AT" ]; then
      # Start profiling once the ramp and settle are over (a rough
      # estimate: n/ramp + 4 s), for most of the window.
      secs=${DURATION%s}
      ( sleep $(( n / RAMP + 4 )) &&
        curl -fsS -o "$OUT/cpu-$STAMP-gop${gop}s-$n.prof" \
          "$PPROF_URL/debug/pprof/profile?seconds=$(( secs > 5 ? secs - 3 : secs ))" ) &
      prof_pid=$!
      ( sleep $(( n / RAMP + 4 + secs / 2 )) &&
        curl -fsS -o "$OUT/heap-$STAMP-gop${gop}s-$n.prof" "$PPROF_URL/debug/pprof/heap?gc=1" ) &
      prof_pid="$prof_pid $!"
    fi
    # shellcheck disable=SC2086
    "$ROOT/bin/icey-bench" $BENCH_ARGS -url "http://127.0.0.1:$PORT/whep" -viewers "$n" -ramp "$RAMP" \
      -duration "$DURATION" -pid "$SRV_PID" -label "gop${gop}s" -json "$JSONL" | tee -a "$TXT"
    for p in $prof_pid; do wait "$p" || echo "bench: profile capture failed" >&2; done
    stop_server
  done
done

{
  echo
  echo "# summary (traffic over the steady-state window; latencies over all connected viewers)"
  "$ROOT/bin/icey-bench" -summary "$JSONL"
} | tee -a "$TXT"
echo "bench: wrote $TXT and $JSONL" >&2
