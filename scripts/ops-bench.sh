#!/usr/bin/env bash
# Measures the ops API: process start -> /api/ready 200, and /api/health and
# /api/status latency (p50, p99) and requests/s under a concurrent load loop
# (wrk, 2 threads, 32 connections, 10 s) on loopback. Run via `make ops-bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { [ "$(id -u)" -eq 0 ] && apt-get install -y -qq wrk >/dev/null; }
PORT=${PORT:-4580}
TOKEN=ops-bench-token
go build -o bin/icey-server ./cmd/icey-server
LOG=$(mktemp)
# start_ready starts the server and sets PID and READY_MS (no subshell: the
# server must stay this shell's child).
start_ready() {
  local t0 t1
  t0=$(date +%s%N)
  ICEY_AUTH_TOKEN=$TOKEN bin/icey-server --host 127.0.0.1 --port "$PORT" --turn-port $((PORT+1)) --log-level warn >>"$LOG" 2>&1 &
  PID=$!
  until curl -fs "http://127.0.0.1:$PORT/api/ready" >/dev/null 2>&1; do sleep 0.002; done
  t1=$(date +%s%N)
  READY_MS=$(( (t1 - t0) / 1000000 ))
}
runs=()
for i in 1 2 3 4 5; do
  start_ready
  runs+=("$READY_MS")
  kill "$PID"; wait "$PID" 2>/dev/null || true
done
echo "process start -> /api/ready 200 (ms, 5 runs): ${runs[*]}"
start_ready
trap 'kill $PID 2>/dev/null || true' EXIT
for path in /api/health /api/ready /api/status; do
  echo "== GET $path"
  wrk -t2 -c32 -d10s --latency -H "X-Icey-Token: $TOKEN" "http://127.0.0.1:$PORT$path" \
    | grep -E '^\s+(50|99)%|Requests/sec|Non-2xx'
done
