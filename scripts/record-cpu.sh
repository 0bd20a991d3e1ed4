#!/usr/bin/env bash
# Server CPU of one 720p30 2 Mb/s file path, with and without recording it,
# with no viewers and with 50 WHEP viewers (icey-bench). Run inside the
# loopback namespace: scripts/netns.sh scripts/record-cpu.sh
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
go build -o bin/icey-server ./cmd/icey-server && go build -o bin/icey-bench ./cmd/icey-bench || exit 1
clip=$ROOT/bench-results/media/720p30-2M-gop1s.mp4
if [ ! -f "$clip" ]; then
  mkdir -p "$(dirname "$clip")"
  ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 -t 20 \
    -c:v libx264 -profile:v baseline -preset veryfast -tune zerolatency -pix_fmt yuv420p -g 30 -keyint_min 30 -sc_threshold 0 -bf 0 \
    -b:v 2M -maxrate 2M -bufsize 2M -c:a libopus -b:a 64k -ac 2 "$clip" || exit 1
fi
PORT=${PORT:-4620}
for round in 1 2; do
  for rec in false true; do
    for viewers in 0 50; do
      d=$(mktemp -d)
      printf '{"media":{"recordDir":"%s/rec"},"turn":{"enabled":false},"paths":{"main":{"source":"%s","record":%s}}}\n' "$d" "$clip" "$rec" > "$d/c.json"
      (cd "$d" && exec "$ROOT/bin/icey-server" -c "$d/c.json" --host 127.0.0.1 --port "$PORT" --log-level warn) > "$d/log" 2>&1 &
      pid=$!
      sleep 3
      bpid=
      if [ "$viewers" -gt 0 ]; then
        "$ROOT/bin/icey-bench" -url "http://127.0.0.1:$PORT/whep" -viewers "$viewers" -duration 25s > /dev/null 2>&1 &
        bpid=$!
        sleep 6
      fi
      t0=$(awk '{print $14+$15}' /proc/$pid/stat); sleep 15; t1=$(awk '{print $14+$15}' /proc/$pid/stat)
      echo "round=$round record=$rec viewers=$viewers server_core_pct=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", (b-a)/100/15*100}') files=$(ls "$d/rec" 2>/dev/null | wc -l)"
      if [ -n "$bpid" ]; then kill "$bpid" 2>/dev/null; wait "$bpid" 2>/dev/null; fi
      kill "$pid"; wait "$pid" 2>/dev/null
      rm -rf "$d"
    done
  done
done
