#!/usr/bin/env bash
# make bench's table (issue 23): every figure of the performance issue from one run.
# For each size, one emulator (bench/emulator.sh), and REPEATS rounds of, in turn:
#   paging alone (examples/page_all: the same Extractor, the records dropped),
#   a full export into a fresh folder,
#   an incremental run after one new run per flow (into the full export's folder),
#   a run with nothing new (the same folder),
#   a backfill of the whole history into a fresh folder,
# and at the first size the peers (boto3 + pyarrow, dlt) on the same emulator.
# Each round adds one run per flow (for the incremental run), so later rounds read a
# run more per flow. Each command runs under GNU time (wall, user + system CPU, peak
# RSS); the table gives medians, and each ratio is the median of the rounds' ratios
# (paging alone and the full export run one after the other; the peers later in the
# same round).
# Usage: bash bench/table.sh [REPEATS]   (TABLE_SIZES="FLOWSxRUNSxDAYS ..." to change sizes)
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}
sizes=${TABLE_SIZES:-100x1000x30 500x2000x5 1000x5000x5}
[ -x /usr/bin/time ] || { echo "bench needs GNU time: apt-get install time" >&2; exit 1; }
[ -z "${BIN_DIR:-}" ] || echo "bench: measuring the binaries in $BIN_DIR as they are (not rebuilt)" >&2
source bench/emulator.sh
cargo build --release -p appflow-extract --example page_all
page_all=$target_dir/release/examples/page_all
peers_python=$(bash bench/peers/venv.sh)
export AWS_DEFAULT_REGION=$AWS_REGION DLT_TELEMETRY_DISABLED=1 RUNTIME__DLTHUB_TELEMETRY=false
results=$(mktemp)
trap 'rm -f "$results" "$results.sizes"' EXIT

# One measured command, appended to $results as "size label wall cpu rss_mb round".
measure() { # $1 size, $2 label, $3 round, then the command
  local size=$1 label=$2 round=$3
  shift 3
  /usr/bin/time -f '%e %U %S %M' -o "$work/t.txt" "$@" >"$work/out.txt" 2>"$work/err.txt" ||
    { echo "$label failed:" >&2; cat "$work/err.txt" >&2; exit 1; }
  awk -v s="$size" -v l="$label" -v r="$round" '{ printf "%s %s %.3f %.3f %.1f %s\n", s, l, $1, $2 + $3, $4 / 1024, r }' \
    "$work/t.txt" >>"$results"
}

sizes_done=()
for size in $sizes; do
  IFS=x read -r flows runs days <<<"$size"
  echo "bench: $flows flows x $runs runs over $days days ($((flows * runs / days)) runs a day), $repeats rounds" >&2
  start_emulator "$flows" "$runs" "$days"
  trap 'kill $emu 2>/dev/null || true; rm -rf "$work" "$results" "$results.sizes"' EXIT
  at=(--appflow-endpoint "$endpoint")
  since=$(date -u -d "$((days + 10)) days ago" +%Y-%m-%d)
  for round in $(seq 1 "$repeats"); do
    measure "$size" paging "$round" "$page_all" "$endpoint"
    rm -rf "$work/dest" "$work/backfill"
    measure "$size" full "$round" "$BIN_DIR/appflow-export" run --dest "$work/dest" "${at[@]}"
    [ "$round" = 1 ] && echo "$size output $(du -sb "$work/dest" | cut -f1)" >>"$results.sizes"
    admin POST add-runs '{"count": 1}' >/dev/null
    measure "$size" incremental "$round" "$BIN_DIR/appflow-export" run --dest "$work/dest" "${at[@]}"
    measure "$size" no-change "$round" "$BIN_DIR/appflow-export" run --dest "$work/dest" "${at[@]}"
    measure "$size" backfill "$round" "$BIN_DIR/appflow-export" backfill --since "$since" --dest "$work/backfill" "${at[@]}"
    if [ ${#sizes_done[@]} -eq 0 ]; then
      rm -rf "$work/boto3" "$work/dlt"
      measure "$size" boto3 "$round" "$peers_python" bench/peers/boto3_export.py "$endpoint" "$work/boto3"
      measure "$size" dlt "$round" "$peers_python" bench/peers/dlt_export.py "$endpoint" "$work/dlt"
    fi
  done
  kill "$emu" 2>/dev/null || true
  wait "$emu" 2>/dev/null || true
  rm -rf "$work"
  sizes_done+=("$size")
done
trap 'rm -f "$results" "$results.sizes"' EXIT

echo
echo "appflow-export bench of $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' (with uncommitted changes)') ($("$BIN_DIR/appflow-export" --version)), $(date -u +%Y-%m-%d), $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(rustc --version | cut -d' ' -f1-2), release; medians of $repeats rounds"
python3 - "$results" "$results.sizes" "$("$peers_python" -c 'import dlt; print(dlt.__version__)')" <<'EOF'
import statistics, sys
from collections import defaultdict

rows = defaultdict(list)  # (size, label) -> [(wall, cpu, rss, round)]
for line in open(sys.argv[1]):
    size, label, wall, cpu, rss, rnd = line.split()
    rows[size, label].append((float(wall), float(cpu), float(rss), int(rnd)))
output = dict(line.split()[::2] for line in open(sys.argv[2]))
dlt_version = sys.argv[3]

def med(size, label, i):
    return statistics.median(r[i] for r in rows[size, label])

def ratio(size, a, b, i=0):
    """Median over rounds of a's figure over b's in the same round."""
    bs = {r[3]: r[i] for r in rows[size, b]}
    return statistics.median(r[i] / bs[r[3]] for r in rows[size, a])

names = {"full": "full export", "incremental": "incremental, 1 new run a flow",
         "no-change": "run with nothing new", "backfill": "backfill, whole history",
         "paging": "paging alone (the floor)", "boto3": "peer: boto3 + pyarrow",
         "dlt": f"peer: dlt {dlt_version}"}
print("| workload | run | wall s | CPU s | peak RSS MB | wall / paging | RSS, peer / ours |")
print("|---|---|---|---|---|---|---|")
for size in dict.fromkeys(s for s, _ in rows):
    flows, runs, days = map(int, size.split("x"))
    first = True
    for label in ["paging", "full", "incremental", "no-change", "backfill", "boto3", "dlt"]:
        if (size, label) not in rows:
            continue
        work = f"{flows} x {runs:,} over {days} days ({flows * runs // days:,} a day)" if first else ""
        first = False
        vs_paging = f"{ratio(size, label, 'paging'):.2f}x" if label in ("full", "boto3", "dlt") else ""
        vs_ours = f"{ratio(size, label, 'full', 2):.1f}x" if label in ("boto3", "dlt") else ""
        print(f"| {work} | {names[label]} | {med(size, label, 0):.2f} | {med(size, label, 1):.2f} "
              f"| {med(size, label, 2):.1f} | {vs_paging} | {vs_ours} |")
print()
print("Output of the first full export (bytes, executions + catalog + flows + state): "
      + ", ".join(f"{s}: {int(b):,}" for s, b in output.items()))
EOF
