#!/usr/bin/env bash
# Origin CPU per RTSP reader (an edge) of one 720p30 2 Mb/s path: the server
# with no reader, then with 10 ffmpeg readers. Run inside the loopback
# namespace: scripts/netns.sh scripts/rtsp-cpu.sh (after scripts/record-cpu.sh
# or scripts/bench.sh made the clip).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
go build -o bin/icey-server ./cmd/icey-server || exit 1
clip=$ROOT/bench-results/media/720p30-2M-gop1s.mp4
[ -f "$clip" ] || { echo "no $clip: run scripts/record-cpu.sh or scripts/bench.sh first" >&2; exit 1; }
PORT=${PORT:-4630}; RPORT=${RPORT:-8654}
d=$(mktemp -d)
printf '{"turn":{"enabled":false},"rtsp":{"enabled":true,"port":%s},"paths":{"main":{"source":"%s"}}}\n' "$RPORT" "$clip" > "$d/c.json"
"$ROOT/bin/icey-server" -c "$d/c.json" --host 127.0.0.1 --port "$PORT" --log-level warn > "$d/log" 2>&1 &
pid=$!
sleep 3
cpu() { t0=$(awk '{print $14+$15}' /proc/$pid/stat); sleep 15; t1=$(awk '{print $14+$15}' /proc/$pid/stat); awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", (b-a)/100/15*100}'; }
echo "readers=0 server_core_pct=$(cpu)"
for _ in $(seq 1 10); do
  ffmpeg -nostdin -v error -rtsp_transport tcp -i "rtsp://127.0.0.1:$RPORT/main" -c copy -f null - > /dev/null 2>&1 &
done
sleep 4
echo "readers=10 server_core_pct=$(cpu)"
pkill -f "rtsp://127.0.0.1:$RPORT/main"
kill "$pid"; wait "$pid" 2>/dev/null
rm -rf "$d"
