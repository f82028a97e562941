#!/usr/bin/env bash
# make bench: a full export of FLOWS x RUNS records from the AppFlow emulator into a
# local folder, release build. Reports wall time, records/s and peak RSS of the
# exporter (GNU time), the same for an incremental run with nothing new, and for a
# backfill of the whole history into a fresh folder (run it at two history sizes to
# see that its peak RSS does not grow with the history).
# Usage: bash bench/run.sh [FLOWS] [RUNS_PER_FLOW] [DAYS]   (DAYS: the history's length)
set -euo pipefail
cd "$(dirname "$0")/.."
flows=${1:-200}
runs=${2:-5000}
days=${3:-90}
cargo build --release -p appflow-extract --example page_all
[ -x /usr/bin/time ] || { echo "bench needs GNU time: apt-get install time" >&2; exit 1; }
source bench/emulator.sh
start_emulator "$flows" "$runs" "$days"

measure() { # $1 label, then the command and its arguments (without --dest and the endpoint)
  local label=$1 dest=$work/dest
  shift
  [ "$1" = backfill ] && dest=$work/backfill
  /usr/bin/time -v -o "$work/time.txt" "$BIN_DIR/appflow-export" "$@" --dest "$dest" --appflow-endpoint "$endpoint" >"$work/out.txt"
  local wall rss records
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
  records=$(awk '/records/ {print $2; exit}' "$work/out.txt")
  secs=$(awk -v w="$wall" 'BEGIN { n = split(w, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }')
  printf '%-24s %10s records  wall %8.2f s  %10.0f records/s  peak RSS %6.1f MB\n' \
    "$label" "$records" "$secs" "$(awk -v r="$records" -v s="$secs" 'BEGIN { print (s > 0 ? r / s : 0) }')" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')"
}
echo "appflow-export bench: $flows flows x $runs runs over $days days, $(nproc) cores, $(date -u +%Y-%m-%d)"
# The floor: the same emulator paged through the same Extractor, records dropped.
/usr/bin/time -v -o "$work/time.txt" "$target_dir/release/examples/page_all" "$endpoint" >"$work/out.txt"
page_wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt" | awk '{ n = split($0, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }')
printf '%-24s %10s records  wall %8.2f s  %10s            peak RSS %6.1f MB\n' "paging alone" \
  "$(awk '{print $2}' "$work/out.txt")" "$page_wall" "" "$(awk -F': ' '/Maximum resident set size/ {print $2 / 1024}' "$work/time.txt")"
# The emulator's own CPU per page, to show it is not what limits the export.
emu_cpu() { awk '{print ($14 + $15) / 100}' "/proc/$emu/stat"; }
cpu_before=$(emu_cpu)
measure "full export" run
echo "emulator CPU during the full export: $(awk -v a="$cpu_before" -v b="$(emu_cpu)" 'BEGIN { printf "%.2f", b - a }') s"
measure "incremental, no change" run
measure "backfill, whole history" backfill --since "$(date -u -d "$((days + 10)) days ago" +%Y-%m-%d)"
du -sh "$work/dest" | awk '{print "output size: " $1}'
# The in-process stages alone (criterion): transform, encode, transform + encode.
cargo bench -p appflow-load --bench stages -- --noplot 2>/dev/null | grep -E '^stages/|time:|thrpt:'
