#!/usr/bin/env bash
# What renditions cost: a 720p30 2 Mb/s path (a file, looping), watched by
# 1, 10 and 50 viewers that need a rendition (VP8-only viewers of an
# H.264 path; H.264 viewers of a path with B-frames), against the same
# path's viewers that get the source as is. Per run: the rendition's
# ffmpeg CPU (from /api/status), the server's own CPU, and the viewers'
# first-IDR times (icey-bench). Run inside the loopback namespace:
#   scripts/netns.sh scripts/rendition-cpu.sh
# CASES="vp8 h264-bframes passthrough" (the default) picks the cases.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
go build -o bin/icey-server ./cmd/icey-server && go build -o bin/icey-bench ./cmd/icey-bench || exit 1
media=$ROOT/bench-results/media
mkdir -p "$media"
base=$media/720p30-2M-gop1s.mp4
bf=$media/720p30-2M-gop1s-bframes.mp4
[ -f "$base" ] || ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 -t 20 \
  -c:v libx264 -profile:v baseline -preset veryfast -pix_fmt yuv420p -g 30 -keyint_min 30 -sc_threshold 0 -bf 0 \
  -b:v 2M -maxrate 2M -bufsize 2M -c:a libopus -b:a 64k -ac 2 "$base" || exit 1
[ -f "$bf" ] || ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 -t 20 \
  -c:v libx264 -profile:v high -preset veryfast -pix_fmt yuv420p -g 30 -keyint_min 30 -sc_threshold 0 -bf 2 \
  -b:v 2M -maxrate 2M -bufsize 2M -c:a libopus -b:a 64k -ac 2 "$bf" || exit 1
PORT=${PORT:-4630}
WINDOW=${WINDOW:-15}
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
rcpu() { curl -s "http://127.0.0.1:$PORT/api/status" | python3 -c '
import json,sys
s=json.load(sys.stdin)
print(sum(r.get("cpuSeconds",0) for p in s.get("paths",[]) for r in p.get("renditions") or []))'; }
for case in "vp8 $base -vp8-only" "h264-bframes $bf" "passthrough $base"; do
  set -- $case
  name=$1 clip=$2 flag=${3:-}
  case " ${CASES:-vp8 h264-bframes passthrough} " in *" $name "*) ;; *) continue ;; esac
  for viewers in 1 10 50; do
    d=$(mktemp -d)
    printf '{"turn":{"enabled":false},"webrtc":{"maxPendingPerClient":64},"paths":{"main":{"source":"%s"}}}\n' "$clip" > "$d/c.json"
    (cd "$d" && exec "$ROOT/bin/icey-server" -c "$d/c.json" --host 127.0.0.1 --port "$PORT" --log-level warn) > "$d/log" 2>&1 &
    pid=$!
    sleep 3
    "$ROOT/bin/icey-bench" -url "http://127.0.0.1:$PORT/whep" -viewers "$viewers" -duration $((WINDOW + 10))s -video-only $flag -json "$d/bench.json" > /dev/null 2>&1 &
    bpid=$!
    sleep 8
    t0=$(cpu $pid); r0=$(rcpu); sleep "$WINDOW"; t1=$(cpu $pid); r1=$(rcpu)
    wait "$bpid" 2>/dev/null
    idr=$(python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readline()); d=r["join_first_idr"]; print("first_idr_p50_ms=%.0f p95_ms=%.0f max_ms=%.0f connected=%d" % (d["p50_ms"], d["p95_ms"], d["max_ms"], r["connected"]))' "$d/bench.json" 2>/dev/null)
    echo "case=$name viewers=$viewers server_core_pct=$(awk -v a="$t0" -v b="$t1" -v w="$WINDOW" 'BEGIN{printf "%.1f", (b-a)/w}') rendition_core_pct=$(awk -v a="$r0" -v b="$r1" -v w="$WINDOW" 'BEGIN{printf "%.1f", (b-a)/w*100}') $idr"
    kill "$pid"; wait "$pid" 2>/dev/null
    rm -rf "$d"
  done
done
