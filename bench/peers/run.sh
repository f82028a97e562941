#!/usr/bin/env bash
# Peers side by side (issue 10): the same emulator data (FLOWS x RUNS over DAYS days)
# exported by appflow-export, by a boto3 + pyarrow script and by dlt (filesystem
# destination, Parquet), each under GNU time, with paging alone as the floor.
# The peers are installed into their own virtualenv, bench/.venv-peers.
# Usage: bash bench/peers/run.sh [FLOWS] [RUNS_PER_FLOW] [DAYS]
set -euo pipefail
cd "$(dirname "$0")/../.."
flows=${1:-100}
runs=${2:-1000}
days=${3:-30}
venv=bench/.venv-peers
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import boto3, pyarrow, dlt' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check boto3 pyarrow "dlt[parquet]"
fi
cargo build --release -p appflow-export -p appflow-emulator --bins
cargo build --release -p appflow-extract --example page_all
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release

work=$(mktemp -d)
"$bin/appflow-emulator" --flows "$flows" --runs-per-flow "$runs" --days "$days" --seed 1 >"$work/emu.out" 2>&1 &
emu=$!
trap 'kill $emu 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 600); do grep -q '^listening on ' "$work/emu.out" && break; sleep 0.1; done
endpoint=$(sed -n 's/^listening on //p' "$work/emu.out")
[ -n "$endpoint" ] || { echo "the emulator did not start" >&2; exit 1; }
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
  AWS_EC2_METADATA_DISABLED=true RUST_LOG=warn DLT_TELEMETRY_DISABLED=1 RUNTIME__DLTHUB_TELEMETRY=false

declare -A wall rss
measure() { # $1 label, then the command
  local label=$1
  shift
  /usr/bin/time -v -o "$work/time.txt" "$@" >"$work/out.txt" 2>"$work/err.txt" || { cat "$work/err.txt" >&2; exit 1; }
  wall[$label]=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt" | awk '{ n = split($0, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }')
  rss[$label]=$(awk -F': ' '/Maximum resident set size/ {print $2 / 1024}' "$work/time.txt")
}
measure "paging alone" "$bin/examples/page_all" "$endpoint"
measure "appflow-export" "$bin/appflow-export" run --dest "$work/ours" --appflow-endpoint "$endpoint"
measure "boto3 + pyarrow" "$venv/bin/python" bench/peers/boto3_export.py "$endpoint" "$work/boto3"
measure "dlt (filesystem, parquet)" "$venv/bin/python" bench/peers/dlt_export.py "$endpoint" "$work/dlt"
echo "peers: $flows flows x $runs runs over $days days, $(nproc) cores, $(date -u +%Y-%m-%d), dlt $("$venv/bin/python" -c 'import dlt; print(dlt.__version__)')"
printf '%-28s %9s %11s %16s %16s\n' "" "wall s" "peak RSS MB" "wall / ours" "RSS / ours"
for label in "paging alone" "appflow-export" "boto3 + pyarrow" "dlt (filesystem, parquet)"; do
  printf '%-28s %9.2f %11.1f %16.2f %16.2f\n' "$label" "${wall[$label]}" "${rss[$label]}" \
    "$(awk -v a="${wall[$label]}" -v b="${wall[appflow-export]}" 'BEGIN { print a / b }')" \
    "$(awk -v a="${rss[$label]}" -v b="${rss[appflow-export]}" 'BEGIN { print a / b }')"
done
