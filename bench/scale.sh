#!/usr/bin/env bash
# Peak memory at AppFlow's limits (issue 10): a full export of FLOWS x RUNS over DAYS
# days into a local folder, then an incremental run after one new run per flow, then a
# backfill of the whole history into a fresh folder. Release build; GNU time's peak
# RSS of the exporter. Run it at 200,000 and at 1,000,000 runs a day to see that the
# peak does not grow with the runs of a day.
# Usage: bash bench/scale.sh [FLOWS] [RUNS_PER_FLOW] [DAYS] [REPEATS]
# EXPORT_BIN=path measures another build of appflow-export (an older release).
set -euo pipefail
cd "$(dirname "$0")/.."
flows=${1:-500}
runs=${2:-2000}
days=${3:-5}
repeats=${4:-1}
cargo build --release -p appflow-export -p appflow-emulator --bins
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release
[ -x /usr/bin/time ] || { echo "bench needs GNU time: apt-get install time" >&2; exit 1; }

work=$(mktemp -d)
emu_out="$work/emulator.out"
"$bin/appflow-emulator" --flows "$flows" --runs-per-flow "$runs" --days "$days" --seed 1 >"$emu_out" 2>&1 &
emu=$!
trap 'kill $emu 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 1200); do grep -q '^listening on ' "$emu_out" && break; sleep 0.1; done
endpoint=$(sed -n 's/^listening on //p' "$emu_out")
[ -n "$endpoint" ] || { echo "the emulator did not start:" >&2; cat "$emu_out" >&2; exit 1; }

export ${BENCH_ENV:-BENCH_NONE=1}
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true RUST_LOG=warn
measure() { # $1 label, $2 destination, then the command and its arguments
  local label=$1 dest=$2
  shift 2
  /usr/bin/time -v -o "$work/time.txt" "${EXPORT_BIN:-$bin/appflow-export}" "$@" --dest "$dest" --appflow-endpoint "$endpoint" >"$work/out.txt"
  local wall rss secs
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
  secs=$(awk -v w="$wall" 'BEGIN { n = split(w, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }')
  printf '%-28s wall %8.2f s  peak RSS %6.1f MB\n' "$label" "$secs" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')"
}
per_day=$((flows * runs / days))
echo "appflow-export scale bench: $flows flows x $runs runs over $days days ($per_day runs a day), $(nproc) cores, $(date -u +%Y-%m-%d)"
since=$(date -u -d "$((days + 10)) days ago" +%Y-%m-%d)
for i in $(seq 1 "$repeats"); do
  rm -rf "$work/dest" "$work/backfill"
  measure "full export" "$work/dest" run
  curl -sf -X POST -H 'content-type: application/json' -d '{"count": 1}' "$endpoint/_emulator/add-runs" >/dev/null
  measure "incremental, 1 new run/flow" "$work/dest" run
  measure "backfill, whole history" "$work/backfill" backfill --since "$since"
done
du -sh "$work/dest" | awk '{print "output size: " $1}'
