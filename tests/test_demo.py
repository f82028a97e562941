"""`appflow-export demo` (what `make run` runs): two exports from the bundled emulator
into a local folder, and the queries it prints run as printed."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from conftest import REPO, assert_exit, run_export


def test_demo_twice_and_its_queries(tmp_path):
    folder = tmp_path / "demo"
    args = ["demo", "--dir", str(folder), "--flows", "6", "--runs-per-flow", "40"]
    first = run_export(args)
    assert_exit(first, 0)
    # A second demo replaces the first one's folder, flows table included.
    second = run_export([*args, "--seed", "8"])
    assert_exit(second, 0)
    assert "2. Meanwhile in AppFlow" in second.stdout and "3. Second export" in second.stdout

    flows = pq.read_table(folder / "flows" / "123456789012_us-east-1.parquet").to_pylist()
    assert len(flows) == 6 and all(f["deleted_at"] is None for f in flows), \
        "the earlier demo's flows were merged into this one's"

    # The one-line DuckDB query it prints runs and sees every run.
    printed = re.search(r'duckdb -c "(.+)"', second.stdout).group(1)
    rows = duckdb.connect().execute(printed).fetchall()
    runs = duckdb.connect().execute(
        f"SELECT count(*) FROM read_parquet('{folder}/executions/*/*.parquet')").fetchone()[0]
    assert sum(r[1] for r in rows) == runs > 6 * 40

    # The views command it prints, run as printed (relative paths from the repository).
    line = next(l.strip() for l in second.stdout.splitlines() if " schema --format duckdb " in l)
    command = shlex.split(line.split(" > ")[0])
    views = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True).stdout
    con = duckdb.connect()
    con.execute(views)
    query = Path(REPO, "schemas/queries/daily_runs_and_failure_rate.sql").read_text()
    assert sum(r[4] for r in con.execute(query).fetchall()) == runs
