"""`appflow-export backfill --since D [--until D]`: re-reads every flow's whole history
and merges the runs of the window into the export, without duplicates, never moving a
watermark backwards; run again after an interruption, it reads no flow it completed."""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import pytest

from conftest import (DAY_MS, HISTORY, Dataset, ExportProcess, assert_exit, assert_export, export, read_output, run_args,
                      run_export, truth, utc_day)


def backfill(emulator, dest, *args: str):
    base, env = run_args(emulator, dest)
    return run_export(["backfill", *base[1:], *args], env)


def start_backfill(emulator, dest, *args: str) -> ExportProcess:
    base, env = run_args(emulator, dest)
    return ExportProcess(["backfill", *base[1:], *args], env)


def completed(dest, since: str, until: str = "open") -> set[str]:
    """The flows the backfill's progress file records as done."""
    files = list((dest.path / "_state" / "backfills" / f"{since}_{until}").glob("*.json"))
    if not files:
        return set()
    [path] = files
    progress = json.loads(path.read_text())
    return {name for name, f in progress["flows"].items() if f["completed_ms"] >= progress["restarted_ms"]}


def flows_read(emulator) -> set[str]:
    """The flows whose run history was paged since the counters were reset."""
    return {name for name, calls in emulator.counters()["describe_calls_by_flow"].items() if calls}


def resumed(stdout: str) -> int:
    found = re.search(r"resumed\s+(\d+) flows already backfilled", stdout)
    return int(found.group(1)) if found else 0


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


def test_a_run_a_backfill_read_open_is_exported_when_it_ends(start_emulator, local_dest):
    """A run that appears late, open, beyond the lookback: incremental runs do not read
    it. A backfill does, and holds it for the incremental runs: its end is exported."""
    emulator = start_emulator(flows=1, runs_per_flow=300, days=3)
    flow = emulator.flow_names()[0]
    emulator.finish_runs([flow])
    assert_exit(export(emulator, local_dest), 0)
    newest = max(r["startedAt"] for f in emulator.flows() for r in f["records"])
    late = emulator.add_runs(1, flows=[flow], status="InProgress", start=round(newest * 1000) - 3 * 3_600_000)
    assert_exit(backfill(emulator, local_dest, "--since", days_ago(5)), 0)
    emulator.finish_runs([flow])
    assert_exit(export(emulator, local_dest), 0)
    rows = read_output(local_dest.local_copy()).executions
    row = next(r for key, r in rows.items() if late[0][1] in key)
    assert row["execution_status"] != "InProgress", row
    assert_export(local_dest, truth(emulator))


def test_backfill_never_moves_a_watermark_back(emulator, local_dest):
    assert_exit(export(emulator, local_dest), 0)
    before = state(local_dest)
    result = backfill(emulator, local_dest, "--since", days_ago(11), "--until", days_ago(9))
    assert_exit(result, 0)
    after = state(local_dest)
    for name, flow in before.items():
        assert after[name]["watermark_ms"] == flow["watermark_ms"], name
        assert (after[name]["oldest_open_ms"], after[name]["pages_sorted"]) == \
            (flow["oldest_open_ms"], flow["pages_sorted"]), "a backfill of a window with no run open adds none"
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


@pytest.mark.parametrize("checkpoint", ["0s", "250ms"])
def test_an_interrupted_backfill_reads_no_completed_flow_again(emulator, local_dest, checkpoint):
    # Slow pages (two of 100 ms a flow), one call in flight, and frequent checkpoints:
    # one flow a round, or rounds of the four flows read at once for that one call.
    # Killed (no chance to clean up) part-way.
    since = days_ago(30)
    emulator.set_faults({"latency_ms": 100})
    proc = start_backfill(emulator, local_dest, "--since", since, "--concurrency", "1",
                          "--checkpoint-every", checkpoint)
    deadline = time.monotonic() + 120
    while len(completed(local_dest, since)) < 3 and proc.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.proc.kill()
    killed = proc.wait()
    assert killed.returncode == -9, f"the backfill ended before it was killed: {killed.returncode}\n{killed.stderr}"
    done = completed(local_dest, since)
    names = set(emulator.flow_names())
    assert 3 <= len(done) < len(names), done

    emulator.set_faults({})
    emulator.reset_counters()
    result = backfill(emulator, local_dest, "--since", since)
    assert_exit(result, 0)
    assert flows_read(emulator) == names - done, "the rerun reads exactly the flows not completed"
    assert resumed(result.stdout) == len(done), result.stdout
    assert completed(local_dest, since) == names
    assert_export(local_dest, truth(emulator))


def progress_files(dest, since: str, until: str = "open") -> list[dict]:
    """The backfill's progress files, in a local folder or a bucket."""
    rel = f"_state/backfills/{since}_{until}/"
    if dest.kind == "local":
        return [json.loads(p.read_text()) for p in (dest.path / rel).glob("*.json")]
    keys = [o["Key"] for o in dest.objects() if o["Key"].startswith(f"{dest.prefix}/{rel}")]
    return [json.loads(dest.client.get_object(Bucket=dest.bucket, Key=k)["Body"].read()) for k in keys]


def status_of(dest, *args: str):
    result = run_export(["status", "--dest", dest.uri, *dest.args, *args], dest.env)
    assert_exit(result, 0)
    return result.stdout


def test_a_rerun_after_a_failed_flow_reads_only_that_flow(emulator, dest):
    since = days_ago(30)
    bad = emulator.flow_names()[2]
    emulator.set_faults({"malformed_flows": [bad]})
    first = backfill(emulator, dest, "--since", since)
    assert_exit(first, 1)
    assert bad in first.stderr
    names = set(emulator.flow_names())
    [progress] = progress_files(dest, since)
    assert set(progress["flows"]) == names - {bad}
    # Nothing of the failed flow reached a file, though its first page was read.
    assert_export(dest, truth(emulator).without(bad))
    # status shows how far the backfill got, as JSON and as a table.
    [shown] = json.loads(status_of(dest, "--format", "json"))["backfills"]
    assert (shown["since"], shown["until"], shown["flows_completed"]) == (since, None, len(names) - 1)
    assert (shown["account_id"], shown["region"]) == (HISTORY["account"], HISTORY["region"])
    assert re.search(rf"^  {since}\s+\(no end\)\s+{HISTORY['account']}\s+{HISTORY['region']}\s+{len(names) - 1}\s",
                     status_of(dest), re.M)

    emulator.set_faults({})
    emulator.reset_counters()
    second = backfill(emulator, dest, "--since", since)
    assert_exit(second, 0)
    assert flows_read(emulator) == {bad}
    assert resumed(second.stdout) == len(names) - 1
    newest = json.loads(status_of(dest, "--format", "json"))["runs"][0]
    assert newest["flows_already_backfilled"] == len(names) - 1
    assert [f["flow_name"] for f in newest["flows"]] == [bad]
    [progress] = progress_files(dest, since)
    assert set(progress["flows"]) == names
    assert_export(dest, truth(emulator))


def test_a_completed_backfill_reads_nothing_again_unless_restarted(emulator, local_dest):
    since, until = days_ago(10), days_ago(2)
    assert_exit(backfill(emulator, local_dest, "--since", since, "--until", until), 0)
    names = set(emulator.flow_names())
    assert completed(local_dest, since, until) == names

    emulator.reset_counters()
    again = backfill(emulator, local_dest, "--since", since, "--until", until)
    assert_exit(again, 0)
    assert flows_read(emulator) == set()
    assert resumed(again.stdout) == len(names)
    dry = backfill(emulator, local_dest, "--since", since, "--until", until, "--dry-run")
    assert_exit(dry, 0)
    assert "would export 0 flows" in dry.stdout, dry.stdout
    for name in names:
        assert re.search(rf"^  {re.escape(name)}  \S+  \(none: an earlier run of this backfill completed it",
                         dry.stdout, re.M), dry.stdout

    # Another window is another backfill; --restart reads this one's flows again.
    emulator.reset_counters()
    other = backfill(emulator, local_dest, "--since", since)
    assert_exit(other, 0)
    assert flows_read(emulator) == names
    emulator.reset_counters()
    restarted = backfill(emulator, local_dest, "--since", since, "--until", until, "--restart")
    assert_exit(restarted, 0)
    assert flows_read(emulator) == names
    assert resumed(restarted.stdout) == 0
    assert_export(local_dest, truth(emulator).select_rows(lambda r: utc_day(r["started_at"]) >= since))
