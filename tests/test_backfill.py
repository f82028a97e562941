"""`appflow-export backfill --since D [--until D]`: re-reads every flow's whole history
and merges the runs of the window into the export, without duplicates, never moving a
watermark backwards. (First slice: memory bounded per page, the progress bar and
resuming an interrupted backfill are still to come.)"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from conftest import (DAY_MS, Dataset, assert_exit, assert_export, export, read_output, run_args, run_export,
                      truth, utc_day)


def backfill(emulator, dest, *args: str):
    base, env = run_args(emulator, dest)
    return run_export(["backfill", *base[1:], *args], env)


def state(dest) -> dict:
    [path] = (dest.path / "_state" / "flows").glob("*.json")
    return json.loads(path.read_text())["flows"]


def days_ago(n: int) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=n)).strftime("%Y-%m-%d")


def test_backfill_updates_runs_an_incremental_run_no_longer_reads(emulator, local_dest):
    # With --max-open-age 1d, runs open for longer stop holding the watermark back:
    # once they finish, incremental runs do not read them again. A backfill does.
    assert_exit(export(emulator, local_dest, "--max-open-age", "1d"), 0)
    before = truth(emulator)
    stale_open = [k for k, r in before.executions.items()
                  if r["execution_status"] in ("InProgress", "CancelStarted")
                  and r["started_at"] < before_ms(before) - 2 * DAY_MS]
    assert stale_open, "the history has a run open for days (the emulator's stuck run)"
    emulator.finish_runs()
    assert_exit(export(emulator, local_dest, "--max-open-age", "1d"), 0)
    after = truth(emulator)
    # The incremental run left the old run as it was...
    exported = read_output(local_dest.path)
    assert any(exported.executions[k]["execution_status"] != after.executions[k]["execution_status"]
               for k in stale_open)
    watermarks = {n: f["watermark_ms"] for n, f in state(local_dest).items()}

    result = backfill(emulator, local_dest, "--since", days_ago(30))
    assert_exit(result, 0)
    # ...the backfill brings it, and everything else, to what AWS says now: no duplicate.
    assert_export(local_dest, after)
    assert {n: f["watermark_ms"] for n, f in state(local_dest).items()} == watermarks


def before_ms(data: Dataset) -> int:
    return max(r["started_at"] for r in data.executions.values())


def test_backfill_of_a_window_into_a_new_destination(emulator, local_dest):
    since, until = days_ago(8), days_ago(4)
    result = backfill(emulator, local_dest, "--since", since, "--until", until)
    assert_exit(result, 0)
    everything = truth(emulator)
    window = everything.select_rows(lambda r: since <= utc_day(r["started_at"]) <= until)
    assert window.executions and len(window.executions) < len(everything.executions)
    assert_export(local_dest, window)
    # Its watermarks are the newest runs of the window; an incremental run then adds
    # everything newer: the export holds every run since --since, none before.
    newest = {}
    for r in window.executions.values():
        newest[r["flow_name"]] = max(newest.get(r["flow_name"], 0), r["started_at"])
    assert {n: f["watermark_ms"] for n, f in state(local_dest).items()} == newest
    assert_exit(export(emulator, local_dest), 0)
    assert_export(local_dest, everything.select_rows(lambda r: utc_day(r["started_at"]) >= since))


def test_backfill_never_moves_a_watermark_back(emulator, local_dest):
    assert_exit(export(emulator, local_dest), 0)
    before = state(local_dest)
    result = backfill(emulator, local_dest, "--since", days_ago(11), "--until", days_ago(9))
    assert_exit(result, 0)
    after = state(local_dest)
    for name, flow in before.items():
        assert after[name]["watermark_ms"] == flow["watermark_ms"], name
        assert (after[name]["oldest_open_ms"], after[name]["pages_sorted"]) == \
            (flow["oldest_open_ms"], flow["pages_sorted"]), "a backfill leaves the open-run state alone"
    assert_export(local_dest, truth(emulator))


@pytest.mark.parametrize("args, message", [
    (["--since", "2026-13-01"], "'2026-13-01' is not a date"),
    (["--since", "2026-05-02", "--until", "2026-05-01"], "--until 2026-05-01 is before --since 2026-05-02"),
    ([], "--since"),
])
def test_bad_windows_are_usage_errors(emulator, local_dest, args, message):
    emulator.reset_counters()
    result = backfill(emulator, local_dest, *args)
    assert_exit(result, 2)
    assert message in result.stderr, result.stderr
    assert emulator.api_calls() == 0
