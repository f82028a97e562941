#!/usr/bin/env bash
# An organization's export (issue 19): ACCOUNTS accounts x 2 regions, each account read
# through a role (the emulator plays STS AssumeRole and serves each account and region
# its own flows), every AppFlow call LATENCY ms, at --target-concurrency 1 and 4 (the
# default), into a fresh local folder each time (a first, full export). Prints each
# run's wall time and peak RSS (GNU time), the medians of REPEAT runs and their ratio,
# measured in one run.
# Usage: bash bench/accounts.sh [ACCOUNTS] [FLOWS] [RUNS_PER_FLOW] [LATENCY_MS] [REPEAT]
# BIN_DIR=target/debug measures another build.
set -euo pipefail
cd "$(dirname "$0")/.."
accounts=${1:-8}
flows=${2:-10}
runs=${3:-300}
latency=${4:-50}
repeat=${5:-3}
ids=$(python3 -c "print(','.join(f'{111111111100 + i:012d}' for i in range($accounts)))")
roles=$(python3 -c "print(','.join(f'arn:aws:iam::{a}:role/appflow-export-reader' for a in '$ids'.split(',')))")
source bench/emulator.sh
start_emulator "$flows" "$runs" 10 --account "$ids" --region eu-west-1,us-east-1
admin_all() {
  for a in ${ids//,/ }; do for r in eu-west-1 us-east-1; do
    curl -sf -X PUT -H 'content-type: application/json' -d "$1" "$endpoint/_emulator/faults?account=$a&region=$r" >/dev/null
  done; done
}
admin_all "{\"latency_ms\": $latency}"
pages=$(( flows * ( (runs + 99) / 100 ) ))
echo "appflow-export accounts bench: $accounts accounts x 2 regions, $flows flows x $runs runs each ($pages pages + 1 ListFlows a target), ${latency} ms a call; $(nproc) cores, $(date -u +%Y-%m-%d)"
declare -A walls
for tc in 1 4; do
  for i in $(seq 1 "$repeat"); do
    rm -rf "$work/dest"
    start=$(date +%s.%N)
    code=0
    AWS_ENDPOINT_URL_APPFLOW=$endpoint AWS_ENDPOINT_URL_STS=$endpoint /usr/bin/time -v -o "$work/time.txt" \
      "$BIN_DIR/appflow-export" run --dest "$work/dest" --region eu-west-1,us-east-1 --role-arn "$roles" \
      --target-concurrency "$tc" >"$work/out.txt" 2>"$work/err.txt" || code=$?
    end=$(date +%s.%N)
    wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
    walls[$tc]="${walls[$tc]:-} $wall"
    rss=$(awk -F': ' '/Maximum resident/ { printf "%.1f", $2 / 1024 }' "$work/time.txt")
    echo "--target-concurrency $tc, run $i: wall $wall s, peak RSS $rss MB, exit $code, $(grep -c '^== ' "$work/out.txt") targets"
    [ "$code" = 0 ] || { tail -5 "$work/err.txt" >&2; exit 1; }
  done
done
python3 - "${walls[1]}" "${walls[4]}" <<'PY'
import statistics, sys
one, four = (statistics.median(map(float, w.split())) for w in sys.argv[1:3])
print(f"median wall: --target-concurrency 1 {one:.2f} s, 4 {four:.2f} s; 1 / 4 = {one / four:.2f}x")
PY
