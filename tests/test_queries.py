"""`schemas/queries/*.sql`, each run in DuckDB over the generated views of an emulator
export and checked against the answer computed here from the emulator's data (never
from the export)."""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from conftest import HISTORY, REPO, Emulator, LocalDest, assert_exit, export, run_export, truth

QUERIES = REPO / "schemas" / "queries"
DUCKDB_CLI = Path(sys.executable).parent / "duckdb"  # duckdb-cli 1.x, from the Makefile
HOUR_MS, DAY_MS = 3_600_000, 86_400_000
FINISHED = {"Successful", "Error", "Canceled"}
OPEN = {"InProgress", "CancelStarted"}


def plain(value):
    """A DuckDB value as the expectations below write it: timestamps as epoch ms,
    dates as text."""
    if isinstance(value, dt.datetime):
        return round(value.timestamp() * 1000)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def same(got: list[tuple], want: list[tuple]) -> bool:
    def eq(a, b):
        if isinstance(a, float) or isinstance(b, float):
            return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9)
        return a == b
    return len(got) == len(want) and all(len(g) == len(w) and all(map(eq, g, w)) for g, w in zip(got, want))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An export of 40 days of history (a run a day per flow, so some flows' last
    success is older than a day), then a deleted flow and two fresh open runs."""
    emu = Emulator(tmp_path_factory.mktemp("emulator"),
                   **{**HISTORY, "flows": 10, "runs_per_flow": 40, "days": 40, "seed": 11})
    dest = LocalDest(tmp_path_factory.mktemp("dest"))
    try:
        assert_exit(export(emu, dest), 0)
        before = truth(emu)
        definitions = {f["definition"]["flowName"]: f["definition"] for f in emu.flows()}
        names = sorted(definitions)
        # Delete a flow the stale-flows query would list, to see it left out.
        stale = [row[2] for row in _stale_flows({"data": before, "flows": definitions, "deleted": None},
                                                int(time.time() * 1000))]
        assert stale, "the history has a flow without a success in the last day"
        deleted, retired = stale[-1], stale[0]
        assert deleted != retired, "two stale flows: one deleted, one in AWS's Deleted status"
        names.remove(deleted)
        assert emu.set_flow_status([retired], "Deleted") == 1
        definitions[retired]["flowStatus"] = "Deleted"
        assert emu.delete_flows([deleted]) == 1
        now = int(time.time() * 1000)
        emu.add_runs(1, flows=[names[0]], status="InProgress", start=now - 10 * 60_000)
        emu.add_runs(1, flows=[names[1]], status="InProgress", start=now - 3 * HOUR_MS)
        assert_exit(export(emu, dest), 0)
        data = truth(emu).merged_over(before)
    finally:
        emu.stop()
    views = run_export(["schema", "--format", "duckdb", "--dest", dest.uri])
    assert_exit(views, 0)
    views_file = tmp_path_factory.mktemp("views") / "views.sql"
    views_file.write_text(views.stdout)
    con = duckdb.connect()
    con.execute(views.stdout)
    yield {"con": con, "data": data, "flows": definitions, "deleted": deleted, "retired": retired,
           "views": views_file}
    con.close()


def run_query(world, name: str) -> list[tuple]:
    sql = (QUERIES / name).read_text()
    return [tuple(plain(v) for v in row) for row in world["con"].execute(sql).fetchall()]


def executions(world) -> list[dict]:
    return list(world["data"].executions.values())


def key(row: dict) -> tuple:
    return (row["account_id"], row["region"], row["flow_name"])


def nearest_rank(sorted_values: list[float], p: float) -> float:
    return sorted_values[math.ceil(p * len(sorted_values)) - 1]


def test_every_query_file_is_tested():
    tested = {name[len("test_"):] + ".sql" for name in globals()
              if name.startswith("test_") and name not in ("test_every_query_file_is_tested", "test_duckdb_1_cli_gives_the_same_answer",
                                                           "test_query_parses_as_athena_sql")}
    assert {p.name for p in QUERIES.glob("*.sql")} == tested


def test_daily_runs_and_failure_rate(world):
    groups = defaultdict(list)
    for r in executions(world):
        groups[(r["dt"], *key(r))].append(r["execution_status"])
    want = []
    for (day, account, region, flow), statuses in groups.items():
        failed = statuses.count("Error")
        finished = sum(s in FINISHED for s in statuses)
        want.append((day, account, region, flow, len(statuses), failed, failed / finished if finished else None))
    want.sort(key=lambda w: (_desc(w[0]), w[1], w[2], w[3]))
    got = run_query(world, "daily_runs_and_failure_rate.sql")
    assert any(w[5] for w in want) and any(w[6] is None for w in want), "the data has failures and open days"
    assert same(got, want), f"got {got[:3]}..., want {want[:3]}..."


def test_duration_percentiles(world):
    durations = defaultdict(list)
    for r in executions(world):
        if r["duration_seconds"] is not None:
            durations[key(r)].append(r["duration_seconds"])
    want = []
    for k, values in durations.items():
        values.sort()
        want.append((*k, len(values), nearest_rank(values, 0.5), nearest_rank(values, 0.95), values[-1]))
    want.sort(key=lambda w: (-w[5], w[0], w[1], w[2]))
    assert same(run_query(world, "duration_percentiles.sql"), want)


def test_bytes_per_day_by_source(world):
    sums = defaultdict(lambda: [0, 0, 0, 0])
    for r in executions(world):
        source = world["flows"][r["flow_name"]]["sourceConnectorType"]
        s = sums[(r["dt"], source)]
        s[0] += 1
        s[1] += r["bytes_processed"] or 0
        s[2] += r["bytes_written"] or 0
        s[3] += r["records_processed"] or 0
    want = [(day, source, *s) for (day, source), s in sums.items()]
    want.sort(key=lambda w: (_desc(w[0]), -w[4], w[1]))
    got = [tuple(int(v) if isinstance(v, (int, float)) and i >= 2 else v for i, v in enumerate(row))
           for row in run_query(world, "bytes_per_day_by_source.sql")]
    assert same(got, want)


def _in_progress_over_an_hour(world, now: int) -> list[tuple]:
    rows = [r for r in executions(world) if r["execution_status"] in OPEN and r["started_at"] < now - HOUR_MS]
    rows.sort(key=lambda r: (r["started_at"], *key(r), r["execution_id"]))
    return [(*key(r), r["execution_id"], r["execution_status"], r["started_at"]) for r in rows]


def test_runs_in_progress_over_an_hour(world):
    before = int(time.time() * 1000)
    got = run_query(world, "runs_in_progress_over_an_hour.sql")
    after = int(time.time() * 1000)
    want = _in_progress_over_an_hour(world, before)
    # The answer depends on the clock: it must be the one of some instant of the query.
    assert got and [g[:6] for g in got] in (want, _in_progress_over_an_hour(world, after))
    assert all(g[6] >= dt.timedelta(hours=1) for g in got), "open_for is at least an hour"
    recent = {r["execution_id"] for r in executions(world)
              if r["execution_status"] in OPEN and r["started_at"] >= before - HOUR_MS}
    assert recent, "the data has a run opened within the hour"
    assert not recent & {g[3] for g in got}


def test_glue_registration_failures(world):
    want = []
    for r in world["data"].catalog.values():
        for which in ("table", "partition"):
            if r[f"{which}_registration_status"] == "Error":
                want.append((*key(r), r["execution_id"], r["started_at"], r["ordinal"], r["table_name"], which,
                             r[f"{which}_registration_message"]))
    want.sort(key=lambda w: (-w[4], w[0], w[1], w[2], w[3], w[5], w[7]))
    assert {w[7] for w in want} == {"table", "partition"}, "the data has both kinds of failure"
    assert run_query(world, "glue_registration_failures.sql") == want


def test_top_error_messages(world):
    groups = defaultdict(list)
    for r in executions(world):
        if r["execution_status"] == "Error" and r["execution_message"] is not None:
            groups[r["execution_message"]].append(r)
    want = [(msg, len(rows), len({r["flow_arn"] for r in rows}), max(r["started_at"] for r in rows))
            for msg, rows in groups.items()]
    want.sort(key=lambda w: (-w[1], w[0]))
    assert len(want) > 1
    assert run_query(world, "top_error_messages.sql") == want[:20]


def _stale_flows(world, now: int) -> list[tuple]:
    last_success = {}
    for r in executions(world):
        if r["execution_status"] == "Successful":
            last_success[r["flow_name"]] = max(last_success.get(r["flow_name"], 0), r["started_at"])
    rows = []
    for name, d in world["flows"].items():
        if name == world["deleted"] or d["flowStatus"] == "Deleted":
            continue
        last = last_success.get(name)
        if last is None or last < now - DAY_MS:
            account, region = d["flowArn"].split(":")[4], d["flowArn"].split(":")[3]
            rows.append((account, region, name, d["flowStatus"], d["triggerType"], last))
    rows.sort(key=lambda w: (w[5] is not None, w[5] or 0, w[0], w[1], w[2]))
    return rows


def test_flows_without_recent_success(world):
    before = int(time.time() * 1000)
    got = run_query(world, "flows_without_recent_success.sql")
    after = int(time.time() * 1000)
    want = _stale_flows(world, before)
    assert 0 < len(want) < len(world["flows"]) - 2, "some flows are stale and some are not"
    assert got in (want, _stale_flows(world, after))
    assert not {world["deleted"], world["retired"]} & {g[2] for g in got}


def _cli_rows(world, name: str, like: list[tuple]) -> list[tuple]:
    """The query's rows from the DuckDB 1.x command-line shell (`-json`), each value
    read as the type DuckDB 2 (Python) gave that column; intervals are left out."""
    result = subprocess.run([str(DUCKDB_CLI), "-json", "-init", str(world["views"]), "-c", f".read {QUERIES / name}"],
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0 and "Error" not in result.stderr, f"{name} in the DuckDB CLI:\n{result.stderr}"
    rows = json.loads(result.stdout or "[]")
    # Each column's type: that of its first non-null value in DuckDB 2's answer.
    kinds = [next((type(v) for v in column if v is not None), type(None)) for column in zip(*like)]

    def read(text, kind):
        if text is None or kind is type(None):
            return text
        if kind is int and isinstance(text, str) and ":" in text:
            return plain(dt.datetime.fromisoformat(text))
        return kind(text)

    return [tuple(read(v, k) for v, k in zip(row.values(), kinds) if k is not dt.timedelta) for row in rows]


@pytest.mark.parametrize("name", sorted(p.name for p in QUERIES.glob("*.sql")))
def test_query_parses_as_athena_sql(name):
    """A syntax check in sqlglot's Athena (Trino) dialect: one SELECT each. sqlglot is
    lenient (it also takes some DuckDB-only syntax), so the queries keep to functions
    both engines document: count_if, nullif, row_number, ceil, INTERVAL 'n' UNIT."""
    text = (QUERIES / name).read_text()
    statements = sqlglot.parse(text, read="athena", error_level=sqlglot.ErrorLevel.RAISE)
    assert len(statements) == 1 and isinstance(statements[0], (exp.Select, exp.Union))
    assert "::" not in text, "x::type is DuckDB's cast; Athena needs CAST(x AS type)"


@pytest.mark.parametrize("name", sorted(p.name for p in QUERIES.glob("*.sql")))
def test_duckdb_1_cli_gives_the_same_answer(world, name):
    """The views and every query load and answer alike in DuckDB 1.x's shell (the
    answers of DuckDB 2 are checked against the emulator's data above)."""
    def python_rows():
        return [tuple(v for v in row if not isinstance(v, dt.timedelta)) for row in run_query(world, name)]
    before = python_rows()
    got = _cli_rows(world, name, run_query(world, name))
    assert got, name
    assert same(got, before) or same(got, python_rows()), f"{name}: CLI {got[:2]}, Python {before[:2]}"


def _desc(day: str) -> tuple:
    """A sort key that orders ISO dates newest first."""
    return tuple(-int(part) for part in day.split("-"))
