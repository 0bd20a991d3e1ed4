#!/usr/bin/env bash
# What analysis costs: the decode tap of a 720p30 2 Mb/s path (vision and
# speech on, the contract's defaults), with 0, 1 and 10 WHEP viewers: the
# decoder's CPU (from /api/status, the same one decoder whatever the
# viewers) and the server's own. Run inside the loopback namespace:
#   scripts/netns.sh scripts/intel-cpu.sh
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
go build -o bin/icey-server ./cmd/icey-server && go build -o bin/icey-bench ./cmd/icey-bench || exit 1
clip=$ROOT/bench-results/media/720p30-2M-gop1s.mp4
if [ ! -f "$clip" ]; then
  mkdir -p "$(dirname "$clip")"
  ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 -t 20 \
    -c:v libx264 -profile:v baseline -preset veryfast -pix_fmt yuv420p -g 30 -keyint_min 30 -sc_threshold 0 -bf 0 \
    -b:v 2M -maxrate 2M -bufsize 2M -c:a libopus -b:a 64k -ac 2 "$clip" || exit 1
fi
PORT=${PORT:-4640}
WINDOW=${WINDOW:-15}
dcpu() { curl -s "http://127.0.0.1:$PORT/api/status" | python3 -c '
import json,sys
s=json.load(sys.stdin)
print(s["intelligence"]["visionStats"]["decoderCpuSeconds"])'; }
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
for round in 1 2; do
  for viewers in 0 1 10; do
    d=$(mktemp -d)
    printf '{"turn":{"enabled":false},"media":{"source":"%s","intelligence":{"vision":{"enabled":true},"speech":{"enabled":true}}}}\n' "$clip" > "$d/c.json"
    (cd "$d" && exec "$ROOT/bin/icey-server" -c "$d/c.json" --host 127.0.0.1 --port "$PORT" --log-level warn) > "$d/log" 2>&1 &
    pid=$!
    sleep 3
    bpid=
    if [ "$viewers" -gt 0 ]; then
      "$ROOT/bin/icey-bench" -url "http://127.0.0.1:$PORT/whep" -viewers "$viewers" -duration $((WINDOW + 10))s > /dev/null 2>&1 &
      bpid=$!
    fi
    sleep 5
    t0=$(cpu $pid); d0=$(dcpu); sleep "$WINDOW"; t1=$(cpu $pid); d1=$(dcpu)
    echo "round=$round viewers=$viewers decoder_core_pct=$(awk -v a="$d0" -v b="$d1" -v w="$WINDOW" 'BEGIN{printf "%.1f", (b-a)/w*100}') server_core_pct=$(awk -v a="$t0" -v b="$t1" -v w="$WINDOW" 'BEGIN{printf "%.1f", (b-a)/w}')"
    if [ -n "$bpid" ]; then kill "$bpid" 2>/dev/null; wait "$bpid" 2>/dev/null; fi
    kill "$pid"; wait "$pid" 2>/dev/null
    rm -rf "$d"
  done
done
