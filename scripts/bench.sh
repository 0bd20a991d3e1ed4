#!/usr/bin/env bash
# The reproducible fan-out benchmark behind docs/performance.md. `make bench`
# runs it inside a loopback-only network namespace (scripts/netns.sh).
#
# For each GOP variant (1 s, 4 s) of a 720p30 2 Mb/s H.264 + Opus file it
# starts bin/icey-server on 127.0.0.1 with that file as the source and runs
# bin/icey-bench at each viewer count, restarting the server for every point
# so each starts from the same memory baseline. Before that, at each viewer
# count, it measures the floor: the CPU an ideal fan-out cannot go below on
# this machine (icey-bench -floor: one goroutine SRTP-encrypting a paced
# 720p30 2 Mb/s stream, 1200-byte payloads, to N loopback sockets of another
# process, one sendto per packet), and the same with UDP GSO (-floor -gso:
# one sendmsg per viewer and frame). Every row reports the CPU per packet
# delivered (µs/packet) and per viewer-second. Results:
#   bench-results/bench-<stamp>.txt    the tables, then one summary table
#   bench-results/bench-<stamp>.jsonl  one JSON line per point (labels
#                                      "floor", "floor-gso", "gop<N>s")
#
# Side by side with mediamtx (MEDIAMTX=/path/to/mediamtx): both servers are
# fed by the same RTSP camera, a second bin/icey-server (not measured) that
# serves the clip at rtsp://127.0.0.1:$CAM_PORT/cam (RTSP over TCP), started
# once per GOP. At each viewer count the measured icey-server (--source
# rtsp://127.0.0.1:$CAM_PORT/cam), then mediamtx (its path cam pulls the same
# URL over TCP, sourceOnDemand off, WHEP at http://127.0.0.1:$MTX_PORT/cam/whep,
# WebRTC UDP on 127.0.0.1:$MTX_UDP_PORT, its API on 127.0.0.1:$MTX_API_PORT
# only to wait for the path, log level warn, every other protocol off) serve
# icey-bench -video-only viewers, labelled "icey-gop<N>s" and
# "mediamtx-gop<N>s". The summary then adds the ratios mediamtx÷icey of CPU
# per packet, CPU per viewer-second and RSS per viewer, next to the floors.
# The config mediamtx ran with is kept as bench-results/mediamtx-<stamp>.yml.
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
#                  PROFILE_AT viewers (default 200; icey-server only).
#   BENCH_ARGS=""  extra icey-bench flags (e.g. "-nack=false -rcvbuf 0" for a
#                  generator that neither NACKs nor enlarges its sockets);
#                  with MEDIAMTX, -video-only is added for both servers
#   SKIP_BUILD=1   use the binaries already in bin/
#   FLOOR=1        measure the floor rows; FLOOR=0 skips them
#   FLOOR_DURATION=10s  the floor's measured window (after 1 s of warm-up)
#   MEDIAMTX=""    path to a mediamtx binary: run the side by side (above)
#   VARIANTS=""    icey-server variants measured one after the other at each
#                  point, as LABEL:SENDMODE:FANOUT (webrtc.sendMode,
#                  webrtc.fanout), e.g. "sendto:sendto:per-viewer
#                  gso:gso:per-viewer shared:gso:shared"; rows are labelled
#                  gop<N>s-LABEL. Empty: the server's defaults, one row.
#   CAM_PORT=8654       the camera's RTSP port
#   CAM_HTTP_PORT=4690  the camera's HTTP (and WebRTC) port
#   MTX_PORT=8889       mediamtx's WHEP (HTTP) port
#   MTX_UDP_PORT=8189   mediamtx's WebRTC UDP port
#   MTX_API_PORT=9997   mediamtx's API port
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
FLOOR=${FLOOR:-1}
FLOOR_DURATION=${FLOOR_DURATION:-10s}
MEDIAMTX=${MEDIAMTX:-}
CAM_PORT=${CAM_PORT:-8654}
CAM_HTTP_PORT=${CAM_HTTP_PORT:-4690}
MTX_PORT=${MTX_PORT:-8889}
MTX_UDP_PORT=${MTX_UDP_PORT:-8189}
MTX_API_PORT=${MTX_API_PORT:-9997}
STAMP=$(date -u +%Y%m%d-%H%M%S)
TXT=$OUT/bench-$STAMP.txt
JSONL=$OUT/bench-$STAMP.jsonl
mkdir -p "$MEDIA"

if [ -n "$MEDIAMTX" ]; then
  [ -x "$MEDIAMTX" ] || { echo "bench: MEDIAMTX=$MEDIAMTX is not an executable" >&2; exit 1; }
  MEDIAMTX=$(cd "$(dirname "$MEDIAMTX")" && pwd)/$(basename "$MEDIAMTX")
  case " $BENCH_ARGS " in *" -video-only "*) ;; *) BENCH_ARGS="$BENCH_ARGS -video-only" ;; esac
fi

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
CAM_PID=
CAMDIR=
stop_pid() { # TERM, then KILL after 10 s
  local pid=$1
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}
stop_server() {
  stop_pid "$SRV_PID"
  SRV_PID=
  if [ -n "$RUNDIR" ]; then rm -rf "$RUNDIR"; RUNDIR=; fi
}
stop_camera() {
  stop_pid "$CAM_PID"
  CAM_PID=
  if [ -n "$CAMDIR" ]; then rm -rf "$CAMDIR"; CAMDIR=; fi
}
trap 'stop_server; stop_camera' EXIT
trap 'exit 130' INT TERM # exit (running the EXIT trap), do not carry on

# wait_url URL PID LOG [PATTERN]: wait up to 30 s, while PID lives, for URL
# to answer 2xx with a body matching PATTERN (if given).
wait_url() {
  local url=$1 pid=$2 log=$3 pat=${4:-} body
  for _ in $(seq 150); do
    if body=$(curl -fsS "$url" 2>/dev/null) && { [ -z "$pat" ] || printf '%s' "$body" | grep -q "$pat"; }; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  echo "bench: $url did not become ready; log:" >&2
  tail -20 "$log" >&2
  return 1
}

# start_server SRC LOG [SENDMODE FANOUT]
start_server() {
  local src=$1 log=$2 extra=""
  if [ -n "${3:-}" ]; then extra=$(printf ', "sendMode": "%s", "fanout": "%s"' "$3" "$4"); fi
  RUNDIR=$(mktemp -d "$OUT/run.XXXXXX") # the server's cwd: its config.json, anything it writes
  # every generated viewer comes from one address: lift the per-client
  # pending bound (a real audience comes from many addresses)
  printf '{"webrtc": {"maxSessions": %d, "maxPendingPerClient": %d%s}}\n' "$MAX_SESSIONS" "$MAX_SESSIONS" "$extra" >"$RUNDIR/config.json"
  # shellcheck disable=SC2086
  (cd "$RUNDIR" && exec "$SERVER" --host 127.0.0.1 --port "$PORT" --no-turn \
    --source "$src" --log-level warn $SERVER_ARGS) >"$log" 2>&1 &
  SRV_PID=$!
  wait_url "http://127.0.0.1:$PORT/api/ready" "$SRV_PID" "$log" || return 1
  sleep 2 # let the source reach its steady state before the baseline
}

# start_camera CLIP LOG: the side by side's RTSP camera, an icey-server (not
# measured) serving CLIP at rtsp://127.0.0.1:$CAM_PORT/cam.
start_camera() {
  local clip=$1 log=$2
  CAMDIR=$(mktemp -d "$OUT/cam.XXXXXX")
  printf '{"rtsp": {"enabled": true, "port": %d}, "paths": {"cam": {"source": "%s"}}}\n' \
    "$CAM_PORT" "$clip" >"$CAMDIR/config.json"
  (cd "$CAMDIR" && exec "$SERVER" -c "$CAMDIR/config.json" --host 127.0.0.1 --port "$CAM_HTTP_PORT" \
    --no-turn --log-level warn) >"$log" 2>&1 &
  CAM_PID=$!
  wait_url "http://127.0.0.1:$CAM_HTTP_PORT/api/ready" "$CAM_PID" "$log"
}

# start_mediamtx LOG: the measured mediamtx, pulling the camera.
start_mediamtx() {
  local log=$1
  RUNDIR=$(mktemp -d "$OUT/run.XXXXXX")
  cat >"$RUNDIR/mediamtx.yml" <<YML
logLevel: warn
logDestinations: [stdout]
api: true
apiAddress: 127.0.0.1:$MTX_API_PORT
metrics: false
pprof: false
playback: false
rtsp: false
rtmp: false
hls: false
srt: false
moq: false
webrtc: true
webrtcAddress: 127.0.0.1:$MTX_PORT
webrtcLocalUDPAddress: 127.0.0.1:$MTX_UDP_PORT
webrtcLocalTCPAddress: ""
webrtcIPsFromInterfaces: false
webrtcAdditionalHosts: [127.0.0.1]
webrtcICEServers2: []
paths:
  cam:
    source: rtsp://127.0.0.1:$CAM_PORT/cam
    rtspTransport: tcp
    sourceOnDemand: false
YML
  cp "$RUNDIR/mediamtx.yml" "$OUT/mediamtx-$STAMP.yml"
  (cd "$RUNDIR" && exec "$MEDIAMTX" "$RUNDIR/mediamtx.yml") >"$log" 2>&1 &
  SRV_PID=$!
  wait_url "http://127.0.0.1:$MTX_API_PORT/v3/paths/get/cam" "$SRV_PID" "$log" '"available":true' || return 1
  sleep 2 # as for icey-server: the steady state before the baseline
}

# profile_start N TAG: with PPROF_URL, at PROFILE_AT viewers, capture a CPU
# profile of the window and a heap profile from its middle (PROF_PIDS).
PROF_PIDS=
profile_start() {
  local n=$1 tag=$2 secs
  PROF_PIDS=
  if [ -n "$PPROF_URL" ] && [ "$n" = "$PROFILE_AT" ]; then
    # Start profiling once the ramp and settle are over (a rough
    # estimate: n/ramp + 4 s), for most of the window.
    secs=${DURATION%s}
    ( sleep $(( n / RAMP + 4 )) &&
      curl -fsS -o "$OUT/cpu-$STAMP-$tag-$n.prof" \
        "$PPROF_URL/debug/pprof/profile?seconds=$(( secs > 5 ? secs - 3 : secs ))" ) &
    PROF_PIDS=$!
    ( sleep $(( n / RAMP + 4 + secs / 2 )) &&
      curl -fsS -o "$OUT/heap-$STAMP-$tag-$n.prof" "$PPROF_URL/debug/pprof/heap?gc=1" ) &
    PROF_PIDS="$PROF_PIDS $!"
  fi
}
profile_wait() {
  for p in $PROF_PIDS; do wait "$p" || echo "bench: profile capture failed" >&2; done
  PROF_PIDS=
}

# run_bench URL N LABEL: one icey-bench point against the server SRV_PID.
run_bench() {
  # shellcheck disable=SC2086
  "$ROOT/bin/icey-bench" $BENCH_ARGS -url "$1" -viewers "$2" -ramp "$RAMP" \
    -duration "$DURATION" -pid "$SRV_PID" -label "$3" -json "$JSONL" | tee -a "$TXT"
}

{
  echo "# icey-server fan-out benchmark $STAMP"
  echo "# $(uname -srm), $(nproc) cores, $(go version | cut -d' ' -f3)"
  echo "# viewers: $VIEWERS; GOPs: $GOPS s; window $DURATION; ramp $RAMP/s; server $SERVER $SERVER_ARGS; bench $BENCH_ARGS${VARIANTS:+; variants $VARIANTS}"
  echo "# server binary: $(stat -c '%y, %s bytes' "$SERVER")"
  if [ -n "$MEDIAMTX" ]; then
    echo "# side by side with $MEDIAMTX $("$MEDIAMTX" --version 2>/dev/null | head -1), both fed by rtsp://127.0.0.1:$CAM_PORT/cam"
  fi
} | tee "$TXT"

if [ "$FLOOR" != 0 ]; then
  for n in $VIEWERS; do
    for gso in "" -gso; do
      # shellcheck disable=SC2086
      "$ROOT/bin/icey-bench" -floor $gso -viewers "$n" -duration "$FLOOR_DURATION" -json "$JSONL" | tee -a "$TXT"
    done
  done
fi

for gop in $GOPS; do
  src=$(clip "$gop")
  if [ -n "$MEDIAMTX" ]; then
    start_camera "$src" "$OUT/camera-$STAMP-gop${gop}s.log"
    cam=rtsp://127.0.0.1:$CAM_PORT/cam
    for n in $VIEWERS; do
      for v in ${VARIANTS:-default}; do
        IFS=: read -r vl vs vf <<<"$v"
        label=icey-gop${gop}s${VARIANTS:+-$vl}
        start_server "$cam" "$OUT/server-$STAMP-$label-$n.log" $vs $vf
        profile_start "$n" "$label"
        run_bench "http://127.0.0.1:$PORT/whep" "$n" "$label"
        profile_wait
        stop_server
      done
      start_mediamtx "$OUT/server-$STAMP-mediamtx-gop${gop}s-$n.log"
      run_bench "http://127.0.0.1:$MTX_PORT/cam/whep" "$n" "mediamtx-gop${gop}s"
      stop_server
    done
    stop_camera
    continue
  fi
  for n in $VIEWERS; do
    for v in ${VARIANTS:-default}; do
      IFS=: read -r vl vs vf <<<"$v"
      label=gop${gop}s${VARIANTS:+-$vl}
      start_server "$src" "$OUT/server-$STAMP-$label-$n.log" $vs $vf
      profile_start "$n" "$label"
      run_bench "http://127.0.0.1:$PORT/whep" "$n" "$label"
      profile_wait
      stop_server
    done
  done
done

{
  echo
  echo "# summary (traffic over the steady-state window; latencies over all connected viewers;"
  echo "# us/pkt = CPU per RTP packet the viewers received; floor rows: the ideal sender's CPU)"
  if [ -n "$MEDIAMTX" ]; then
    "$ROOT/bin/icey-bench" -summary "$JSONL" -vs mediamtx,icey
  else
    "$ROOT/bin/icey-bench" -summary "$JSONL"
  fi
} | tee -a "$TXT"
echo "bench: wrote $TXT and $JSONL" >&2
