#!/usr/bin/env bash
# A backfill under an account's request-rate limit (issue 11): the emulator answers
# more than RATE requests a second with 429 ThrottlingException (a token bucket) and
# adds LATENCY ms to every call. The floor is pages / rate; the target is a backfill
# within 1.25x of it, no flow failing, throttled calls under 10% of all calls, at the
# default --concurrency (8) and at a higher one. Figures from the emulator's counters.
# Usage: bash bench/ratelimit.sh [FLOWS] [RUNS_PER_FLOW] [RATE] [LATENCY_MS] [CONCURRENCY...]
# BIN_DIR=target/debug measures another build.
set -euo pipefail
cd "$(dirname "$0")/.."
flows=${1:-200}
runs=${2:-500}
rate=${3:-20}
latency=${4:-50}
shift $(( $# < 4 ? $# : 4 ))
concurrencies=("${@:-8 32}")
source bench/emulator.sh
start_emulator "$flows" "$runs" 30
pages=$(( flows * ( (runs + 99) / 100 ) ))
floor=$(awk -v p="$pages" -v r="$rate" 'BEGIN { printf "%.1f", p / r }')
echo "appflow-export rate-limit bench: backfill of $flows flows x $runs runs ($pages pages), limit $rate req/s, ${latency} ms a call, floor $floor s; $(nproc) cores, $(date -u +%Y-%m-%d)"
for c in ${concurrencies[*]}; do
  rm -rf "$work/dest"
  admin PUT faults "{\"latency_ms\": $latency, \"rate_limit\": $rate}" >/dev/null
  admin POST counters/reset >/dev/null
  start=$(date +%s.%N)
  code=0
  "$BIN_DIR/appflow-export" backfill --since 2020-01-01 --dest "$work/dest" --appflow-endpoint "$endpoint" \
    --concurrency "$c" >"$work/out.txt" 2>"$work/err.txt" || code=$?
  end=$(date +%s.%N)
  admin GET counters | python3 -c '
import json, sys
c = json.load(sys.stdin)["operations"]
calls = sum(o["calls"] for o in c.values()); throttled = sum(o["throttled"] for o in c.values())
wall, floor, conc, code = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
print(f"--concurrency {conc:>3}: wall {wall:6.1f} s ({wall / floor:.2f}x the floor), exit {code}, "
      f"{calls} calls, {throttled} throttled ({100 * throttled / max(calls, 1):.1f}%)")
' "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" "$floor" "$c" "$code"
  grep -E "exported|failed" "$work/out.txt" | head -2 || true
done
