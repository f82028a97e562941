#!/usr/bin/env bash
# AWS throttling (issue 20): a backfill of FLOWS x RUNS (LATENCY ms a call, the default
# --concurrency 8) with no throttling, with 2% and 10% of calls throttled at random,
# under a RATE requests/s limit, and through a storm (every call throttled for STORM
# seconds from the 3rd second). Each line gives the wall time, the ratio the issue's
# target is about (to the unthrottled run of this script, or to pages/rate), the calls
# and throttled calls, and the limit of calls in flight the run reported (lowest and
# highest, from its manifest). For the storm, each second's calls and the most calls in
# flight the emulator saw in that second (its calls log: the limit as AWS sees it),
# and how long after the storm the run was back at full speed (the ceiling in flight
# and at least 90% of the unthrottled run's calls a second). Wall times of one run
# each, all in one run of the script (a noisy machine: compare within one run).
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
echo "appflow-export throttling bench: backfill of $flows flows x $runs runs ($pages pages), ${latency} ms a call, --concurrency 8; $(nproc) cores, $(date -u +%Y-%m-%d)"
none_wall="" none_rate=""
backfill() {  # NAME FAULTS KIND: one backfill; KIND is none, random, rate or storm
  rm -rf "$work/dest"
  admin PUT faults "$2" >/dev/null
  admin POST counters/reset >/dev/null
  local start end code=0 t=0
  start=$(date +%s.%N)
  "$BIN_DIR/appflow-export" backfill --since 2020-01-01 --dest "$work/dest" --appflow-endpoint "$endpoint" \
    >"$work/out.txt" 2>"$work/err.txt" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.25; t=$((t + 1))
    if [ "$3" = storm ]; then
      [ "$t" = 8 ] && admin PUT faults "{\"latency_ms\": $latency, \"throttle_fraction\": 1.0}" >/dev/null
      [ "$t" = $((8 + 4 * storm)) ] && admin PUT faults "{\"latency_ms\": $latency}" >/dev/null
    fi
  done
  wait "$pid" || code=$?
  end=$(date +%s.%N)
  admin GET calls >"$work/calls.json"
  cat "$work"/dest/_state/runs/*.json >"$work/manifest.json"
  python3 - "$1" "$3" "$start" "$end" "$code" "$pages" "$rate" "$storm" "$none_wall" "$none_rate" \
    "$work/calls.json" "$work/manifest.json" "$work/out.txt" >"$work/line.txt" <<'PY'
import json, sys
name, kind, start, end, code, pages, rate, storm, none_wall, none_rate, calls, manifest, out = sys.argv[1:]
start, end, pages, rate, storm = float(start), float(end), int(pages), float(rate), int(storm)
calls, m = json.load(open(calls)), json.load(open(manifest))
wall = end - start
throttled = sum(c["throttled"] for c in calls)
failed = next((l.split("(")[1].split()[0] for l in open(out) if l.startswith("exported ")), "?")
line = (f"{name:<26} wall {wall:6.1f} s, exit {code}, {failed} flows failed, {len(calls):5} calls, "
        f"{throttled:4} throttled ({100 * throttled / max(len(calls), 1):.1f}%), "
        f"limit {m['concurrency_limit_lowest']}-{m['concurrency_limit_highest']} of {m['concurrency']}")
busy = (calls[-1]["at_ms"] - calls[0]["at_ms"]) / 1000 if calls else 0
if kind == "none":
    line += f"\nNONE {wall:.3f} {len(calls) / max(busy, 1e-9):.1f}"
elif kind == "random":
    line += f"; {wall / float(none_wall):.2f}x the unthrottled run"
elif kind == "rate":
    line += f"; {wall / (pages / rate):.2f}x pages/rate ({pages / rate:.0f} s)"
elif kind == "storm":
    t0 = start * 1000
    seconds = {}
    for c in calls:
        s = int((c["at_ms"] - t0) // 1000)
        n, peak = seconds.get(s, (0, 0))
        seconds[s] = (n + 1, max(peak, c["in_flight"]))
    storm_from = next(s for s in sorted(seconds) if any(c["throttled"] for c in calls if int((c["at_ms"] - t0) // 1000) == s))
    storm_to = max(int((c["at_ms"] - t0) // 1000) for c in calls if c["throttled"])
    full = float(none_rate) * 0.9
    back = next((s for s in sorted(seconds) if s > storm_to and seconds[s][0] >= full and seconds[s][1] >= m["concurrency"]), None)
    line += (f"\n  second:          " + " ".join(f"{s:>3}" for s in sorted(seconds))
             + f"\n  calls:           " + " ".join(f"{seconds[s][0]:>3}" for s in sorted(seconds))
             + f"\n  most in flight:  " + " ".join(f"{seconds[s][1]:>3}" for s in sorted(seconds))
             + f"\n  throttled from second {storm_from} to {storm_to}; full speed (>= {full:.0f} calls/s, "
             + f"{m['concurrency']} in flight) again in second {back}: "
             + (f"{back - storm_to} s after the storm" if back is not None else "never"))
print(line)
PY
  if [ "$3" = none ]; then
    read -r _ none_wall none_rate < <(grep '^NONE ' "$work/line.txt")
  fi
  grep -v '^NONE ' "$work/line.txt"
  return 0
}
backfill "none" "{\"latency_ms\": $latency}" none
backfill "2% at random" "{\"latency_ms\": $latency, \"throttle_fraction\": 0.02}" random
backfill "10% at random" "{\"latency_ms\": $latency, \"throttle_fraction\": 0.10}" random
backfill "$rate req/s limit" "{\"latency_ms\": $latency, \"rate_limit\": $rate}" rate
backfill "a ${storm} s storm" "{\"latency_ms\": $latency}" storm
