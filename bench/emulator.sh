# Sourced by the bench scripts: the release binaries (or BIN_DIR's), a scratch folder
# ($work, removed on exit) and an appflow-emulator serving FLOWS x RUNS over DAYS days
# ($endpoint, its pid $emu), with `admin METHOD PATH [JSON]` for its /_emulator/ API;
# $target_dir is where cargo builds.
# Usage: start_emulator FLOWS RUNS DAYS [EMULATOR FLAGS...] (e.g. --account a,b --region x,y)
# Where cargo builds (CARGO_TARGET_DIR, a config's build.target-dir, or target/).
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release -p appflow-export -p appflow-emulator --bins
  BIN_DIR=$target_dir/release
fi
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true RUST_LOG=warn

start_emulator() {
  work=$(mktemp -d)
  local out="$work/emulator.out"
  "$BIN_DIR/appflow-emulator" --flows "$1" --runs-per-flow "$2" --days "$3" --seed 1 "${@:4}" >"$out" 2>&1 &
  emu=$!
  trap 'kill $emu 2>/dev/null || true; rm -rf "$work"' EXIT
  for _ in $(seq 1 1200); do grep -q '^listening on ' "$out" && break; sleep 0.1; done
  endpoint=$(sed -n 's/^listening on //p' "$out")
  [ -n "$endpoint" ] || { echo "the emulator did not start:" >&2; cat "$out" >&2; exit 1; }
}

admin() { curl -sf -X "$1" -H 'content-type: application/json' ${3:+-d "$3"} "$endpoint/_emulator/$2"; }
