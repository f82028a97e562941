#!/usr/bin/env bash
# A run with nothing new over a large account (issue 11): FLOWS flows, LATENCY ms a
# call, read with and without --skip-unchanged. Calls from the emulator's counters,
# wall time of each run (median of REPEATS).
# Usage: bash bench/skip.sh [FLOWS] [RUNS_PER_FLOW] [LATENCY_MS] [REPEATS]
# BIN_DIR=target/debug measures another build.
set -euo pipefail
cd "$(dirname "$0")/.."
flows=${1:-1000}
runs=${2:-100}
latency=${3:-50}
repeats=${4:-3}
source bench/emulator.sh
start_emulator "$flows" "$runs" 30
echo "appflow-export no-change bench: $flows flows, ${latency} ms a call; $(nproc) cores, $(date -u +%Y-%m-%d)"
admin POST finish-runs '{}' >/dev/null # no open run: every flow may be skipped
export_run() { "$BIN_DIR/appflow-export" run --dest "$work/dest" --appflow-endpoint "$endpoint" "$@" >"$work/out.txt"; }
export_run # the first export, every flow read
admin PUT faults "{\"latency_ms\": $latency}" >/dev/null
for mode in every skip; do
  walls=()
  for _ in $(seq 1 "$repeats"); do
    admin POST counters/reset >/dev/null
    start=$(date +%s.%N)
    if [ "$mode" = skip ]; then export_run --skip-unchanged; else export_run; fi
    end=$(date +%s.%N)
    walls+=("$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')")
  done
  median=$(printf '%s\n' "${walls[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  admin GET counters | python3 -c '
import json, sys
ops = json.load(sys.stdin)["operations"]
lists, reads = (ops.get(op, {}).get("calls", 0) for op in ("ListFlows", "DescribeFlowExecutionRecords"))
label = "--skip-unchanged" if sys.argv[2] == "skip" else "every flow read"
print(f"{label:<17} wall {float(sys.argv[1]):6.2f} s (median), {lists} ListFlows + {reads} "
      "DescribeFlowExecutionRecords calls a run")
' "$median" "$mode"
done
