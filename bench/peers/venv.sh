#!/usr/bin/env bash
# The peers' own virtualenv (bench/.venv-peers: boto3, pyarrow, dlt), made when missing;
# prints its python.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=bench/.venv-peers
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import boto3, pyarrow, dlt' 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check boto3 pyarrow 'dlt[parquet]==1.31.*' >&2
fi
echo "$venv/bin/python"
