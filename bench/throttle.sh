#!/usr/bin/env bash
# AWS throttling that does not follow the request rate (issue 20): a backfill of FLOWS x
# RUNS (LATENCY ms a call, default --concurrency) with no throttling, with 2% and 10%
# of calls throttled at random, under a RATE requests/s limit, and through a storm
# (every call throttled for STORM seconds from the 3rd second), the emulator's calls
# a second shown over time, so the recovery after the storm can be read off. Figures
# from the emulator's counters; wall times of one run each (a noisy machine: compare
# within one run of the script).
# Usage: bash bench/throttle.sh [FLOWS] [RUNS_PER_FLOW] [LATENCY_MS] [RATE] [STORM_S]
# BIN_DIR=target/debug measures another build.
set -euo pipefail
cd "$(dirname "$0")/.."
flows=${1:-200}
runs=${2:-500}
latency=${3:-50}
rate=${4:-20}
storm=${5:-10}
source bench/emulator.sh
start_emulator "$flows" "$runs" 30
pages=$(( flows * ( (runs + 99) / 100 ) ))
echo "appflow-export throttling bench: backfill of $flows flows x $runs runs ($pages pages), ${latency} ms a call; $(nproc) cores, $(date -u +%Y-%m-%d)"
calls() { admin GET counters | python3 -c 'import json, sys; c = json.load(sys.stdin)["operations"]; print(sum(o["calls"] for o in c.values()), sum(o["throttled"] for o in c.values()))'; }
backfill() {  # NAME FAULTS [STORM]: one backfill, its wall time and calls
  rm -rf "$work/dest"
  admin PUT faults "$2" >/dev/null
  admin POST counters/reset >/dev/null
  local start end code=0
  start=$(date +%s.%N)
  "$BIN_DIR/appflow-export" backfill --since 2020-01-01 --dest "$work/dest" --appflow-endpoint "$endpoint" \
    >"$work/out.txt" 2>"$work/err.txt" &
  local pid=$! t=0 last=0 line=""
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1; t=$((t + 1))
    if [ -n "${3:-}" ]; then
      [ "$t" = 2 ] && admin PUT faults "{\"latency_ms\": $latency, \"throttle_fraction\": 1.0}" >/dev/null
      [ "$t" = $((2 + storm)) ] && admin PUT faults "{\"latency_ms\": $latency}" >/dev/null
      read -r now _ < <(calls)
      line="$line $((now - last))"; last=$now
    fi
  done
  wait "$pid" || code=$?
  end=$(date +%s.%N)
  read -r total throttled < <(calls)
  local wall
  wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  printf '%-28s wall %6s s, exit %s, %5s calls, %4s throttled (%.1f%%), %s\n' "$1" "$wall" "$code" "$total" "$throttled" \
    "$(awk -v t="$throttled" -v c="$total" 'BEGIN { print 100 * t / (c > 0 ? c : 1) }')" "$(grep -o '[0-9]* failed' "$work/out.txt" | head -1)"
  [ -n "${3:-}" ] && echo "  calls a second (storm from s 3 to s $((2 + storm))):$line"
  return 0
}
backfill "none" "{\"latency_ms\": $latency}"
backfill "2% at random" "{\"latency_ms\": $latency, \"throttle_fraction\": 0.02}"
backfill "10% at random" "{\"latency_ms\": $latency, \"throttle_fraction\": 0.10}"
backfill "$rate req/s limit (floor $(( pages / rate )) s)" "{\"latency_ms\": $latency, \"rate_limit\": $rate}"
backfill "a ${storm} s storm" "{\"latency_ms\": $latency}" storm
