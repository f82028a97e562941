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
[ -x /usr/bin/time ] || { echo "bench needs GNU time: apt-get install time" >&2; exit 1; }
source bench/emulator.sh
start_emulator "$flows" "$runs" "$days"

export ${BENCH_ENV:-BENCH_NONE=1}
measure() { # $1 label, $2 destination, then the command and its arguments
  local label=$1 dest=$2
  shift 2
  /usr/bin/time -v -o "$work/time.txt" "${EXPORT_BIN:-$BIN_DIR/appflow-export}" "$@" --dest "$dest" --appflow-endpoint "$endpoint" >"$work/out.txt"
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
  admin POST add-runs '{"count": 1}' >/dev/null
  measure "incremental, 1 new run/flow" "$work/dest" run
  measure "backfill, whole history" "$work/backfill" backfill --since "$since"
done
du -sh "$work/dest" | awk '{print "output size: " $1}'
