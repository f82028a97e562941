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
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release -p appflow-export -p appflow-emulator --bins
  BIN_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release
fi

work=$(mktemp -d)
emu_out="$work/emulator.out"
"$BIN_DIR/appflow-emulator" --flows "$flows" --runs-per-flow "$runs" --days 30 --seed 1 >"$emu_out" 2>&1 &
emu=$!
trap 'kill $emu 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 1200); do grep -q '^listening on ' "$emu_out" && break; sleep 0.1; done
endpoint=$(sed -n 's/^listening on //p' "$emu_out")
[ -n "$endpoint" ] || { echo "the emulator did not start:" >&2; cat "$emu_out" >&2; exit 1; }
admin() { curl -sf -X "$1" -H 'content-type: application/json' ${3:+-d "$3"} "$endpoint/_emulator/$2"; }

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true RUST_LOG=warn
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
