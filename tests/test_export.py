"""`appflow-export run` end to end: the built binary against the emulator, into a local
folder and into S3 (moto), checked against the emulator's ground truth."""

from __future__ import annotations

import time

import pytest

from conftest import (
    DAY_MS, HISTORY, OPEN_STATUSES, assert_exit, assert_export, export, now_ms, read_output,
    run_export, start_export, truth,
)


def changes(before: dict, after: dict) -> str:
    """The data objects a run created, changed or deleted."""
    created, deleted = after.keys() - before.keys(), before.keys() - after.keys()
    changed = {k for k in before.keys() & after.keys() if before[k] != after[k]}
    return f"created {sorted(created)}, changed {sorted(changed)}, deleted {sorted(deleted)}"


def test_export_matches_ground_truth(emulator, dest):
    expected = truth(emulator)
    started = now_ms()
    result = export(emulator, dest)
    finished = now_ms()
    assert_exit(result, 0)
    assert result.stdout.strip(), "no summary on stdout"
    actual = assert_export(dest, expected)
    stamps = [row["exported_at"] for row in actual.executions.values()]
    assert None not in stamps, "rows without exported_at"
    assert started - 1000 <= min(stamps) and max(stamps) <= finished + 1000, "exported_at is not the run's time"


def test_rerun_without_changes_writes_nothing(emulator, dest):
    assert_exit(export(emulator, dest), 0)
    before = dest.snapshot()
    emulator.reset_counters()
    time.sleep(1.1)  # a rewrite, even of the same bytes, now shows in mtime / LastModified
    assert_exit(export(emulator, dest), 0)
    after = dest.snapshot()
    assert after == before, f"a run with nothing new touched data objects: {changes(before, after)}"
    calls = emulator.counters()["describe_calls_by_flow"]
    assert all(n <= 1 for n in calls.values()), f"DescribeFlowExecutionRecords calls per flow: {calls}"
    assert_export(dest, truth(emulator))


def test_changes_are_merged_in_place(emulator, dest):
    assert_exit(export(emulator, dest), 0)
    first = truth(emulator)
    exported_first = read_output(dest.local_copy()).executions
    open_runs = {k for k, row in first.executions.items() if row["execution_status"] in OPEN_STATUSES}
    oldest = min(row["started_at"] for row in first.executions.values())

    assert emulator.finish_runs() == len(open_runs) > 0
    added = emulator.add_runs(3)
    assert len(added) == 3 * HISTORY["flows"]
    assert emulator.drop_runs(before=oldest + 3 * DAY_MS) > 0  # as AWS retention forgets old runs
    second = truth(emulator)
    expected = second.merged_over(first)

    started = now_ms()
    assert_exit(export(emulator, dest), 0)
    actual = assert_export(dest, expected).executions

    assert set(added) <= actual.keys(), "new runs missing"
    dropped = first.executions.keys() - second.executions.keys()
    assert dropped <= actual.keys(), "runs the API no longer returns were deleted from the export"
    for key in open_runs & second.executions.keys():
        assert actual[key]["execution_status"] == second.executions[key]["execution_status"], f"{key} not updated"
        assert actual[key]["last_updated_at"] == second.executions[key]["last_updated_at"], f"{key} not updated"
    for key, row in actual.items():
        if first.executions.get(key) == expected.executions[key]:
            assert row["exported_at"] == exported_first[key]["exported_at"], f"unchanged {key} got a new exported_at"
        else:
            assert row["exported_at"] >= started - 1000, f"changed {key} kept its old exported_at"


def test_unknown_status_is_kept_raw(emulator, local_dest):
    flow = emulator.flow_names()[0]
    added = emulator.add_runs(2, flows=[flow], status="Queued")
    expected = truth(emulator)
    for key in added:
        assert expected.executions[key]["execution_status"] == "Queued"
        # The contract does not say whether an unknown status is finished.
        del expected.executions[key]["duration_seconds"]
    assert_exit(export(emulator, local_dest), 0)
    assert_export(local_dest, expected)


@pytest.mark.parametrize("faults", [{"throttle_fraction": 0.3}, {"shuffled": True}], ids=["throttled", "shuffled"])
def test_api_faults_do_not_change_the_output(start_emulator, local_dest, faults):
    emulator = start_emulator(faults=faults)
    for incremental in (False, True):
        if incremental:
            emulator.add_runs(2)
        assert_exit(export(emulator, local_dest, "--max-attempts", "10"), 0)
        assert_export(local_dest, truth(emulator))
    if "throttle_fraction" in faults:
        throttled = sum(op["throttled"] for op in emulator.counters()["operations"].values())
        assert throttled > 0, "the emulator throttled nothing: the test proves nothing"


def test_concurrent_runs_keep_every_row(emulator, dest):
    names, writers = emulator.flow_names(), 4
    for replace in (False, True):  # all create the day files, then all replace them
        if replace:
            emulator.add_runs(3)
        runs = [start_export(emulator, dest, "--flows", ",".join(names[i::writers])) for i in range(writers)]
        for run in runs:
            assert_exit(run.wait(), 0)
        assert_export(dest, truth(emulator))


def test_unknown_flow_fails_alone(emulator, local_dest):
    known = emulator.flow_names()[0]
    result = export(emulator, local_dest, "--flows", f"{known},does-not-exist")
    assert_exit(result, 1)
    assert "does-not-exist" in result.stderr, "stderr does not name the unknown flow"
    assert_export(local_dest, truth(emulator).only(known))


@pytest.mark.parametrize("bad_dest", ["ftp://x/y", "s3://", "s3:///prefix"])
def test_bad_dest_is_a_usage_error(emulator, bad_dest):
    result = run_export(["run", "--dest", bad_dest], {"AWS_ENDPOINT_URL_APPFLOW": emulator.url})
    assert_exit(result, 2)
    assert bad_dest in result.stderr, "stderr does not name the bad --dest"
    assert emulator.api_calls() == 0, "AppFlow was called before --dest was checked"


def test_missing_bucket_is_a_destination_error(emulator, make_dest):
    dest = make_dest("s3")
    dest.client.delete_bucket(Bucket=dest.bucket)
    result = export(emulator, dest)
    assert_exit(result, 3)
    assert dest.bucket in result.stderr, "stderr does not name the destination"


def test_unreachable_appflow_endpoint(emulator, local_dest):
    result = export(emulator, local_dest, "--appflow-endpoint", "http://127.0.0.1:9", "--max-attempts", "2",
                    timeout=120)
    assert result.returncode != 0, f"exit code 0 without AppFlow:\n{result.stdout}"
    assert result.stderr.strip(), "no error message on stderr"
    assert emulator.api_calls() == 0, "--appflow-endpoint did not override AWS_ENDPOINT_URL_APPFLOW"
    assert not list(local_dest.path.glob("*/dt=*/*")), "data written without AppFlow"


def test_malformed_response_fails_the_flow_without_advancing_it(emulator, local_dest):
    expected = truth(emulator)
    bad = next(name for name in emulator.flow_names() if "@" in name)
    assert len(expected.only(bad).executions) > 100, "the flow needs a good first page of 100"
    emulator.set_faults({"malformed_flows": [bad]})
    result = export(emulator, local_dest)
    assert_exit(result, 1)
    assert bad in result.stderr, "stderr does not name the flow whose response was malformed"
    assert_export(local_dest, expected.without(bad))

    emulator.set_faults({})
    assert_exit(export(emulator, local_dest), 0)
    assert_export(local_dest, expected)


def test_a_run_with_an_impossible_start_fails_only_its_flow(emulator, local_dest):
    expected = truth(emulator)
    bad = emulator.flow_names()[1]
    # 9e15 ms is about the year 287,000: no dt partition can name it.
    emulator.add_runs(1, flows=[bad], start=9_000_000_000_000_000)
    result = export(emulator, local_dest)
    assert_exit(result, 1)
    assert bad in result.stderr and "startedAt" in result.stderr, result.stderr
    assert_export(local_dest, expected.without(bad))
    # The bad flow is refused again on the next run; the others stay exported.
    assert_exit(export(emulator, local_dest), 1)
    assert_export(local_dest, expected.without(bad))


def test_a_run_stuck_open_past_max_open_age_holds_no_read_back(start_emulator, local_dest):
    """A run stuck InProgress for 20 days: the next incremental run reads only back to
    the watermark (less the lookback), not 7 days deep; a backfill still updates it."""
    emulator = start_emulator(flows=1, runs_per_flow=1200, days=12)
    flow = emulator.flow_names()[0]
    emulator.finish_runs([flow])  # only the stuck run below is open
    stuck = emulator.add_runs(1, flows=[flow], status="InProgress", start=now_ms() - 20 * DAY_MS)
    assert_exit(export(emulator, local_dest), 0)
    emulator.reset_counters()
    assert_exit(export(emulator, local_dest), 0)
    calls = emulator.counters()["describe_calls_by_flow"].get(flow, 0)
    # 1,200 runs over 12 days is about 700 in 7 days: 7 or more pages if the stuck run held.
    assert calls == 1, f"{calls} DescribeFlowExecutionRecords calls for a flow with nothing new"
    emulator.finish_runs([flow])
    args = ["backfill", "--dest", local_dest.uri, "--since", "2020-01-01"]
    assert_exit(run_export(args, {"AWS_ENDPOINT_URL_APPFLOW": emulator.url,
                                  "AWS_ENDPOINT_URL_STS": emulator.url}), 0)
    assert_export(local_dest, truth(emulator))
    rows = read_output(local_dest.local_copy()).executions
    row = next(r for key, r in rows.items() if stuck[0][1] in key)
    assert row["execution_status"] != "InProgress", row


def test_a_run_that_becomes_stuck_does_not_hide_a_newer_open_run(start_emulator, local_dest):
    """The state keeps the oldest open run. When it passes --max-open-age, the next read
    goes back to that age once, so a newer open run older than the watermark's lookback
    is found, held, and its end exported."""
    emulator = start_emulator(flows=1, runs_per_flow=300, days=3)
    flow = emulator.flow_names()[0]
    emulator.finish_runs([flow])
    minute = 60_000
    emulator.add_runs(1, flows=[flow], status="InProgress", start=now_ms() - 50 * minute)
    newer = emulator.add_runs(1, flows=[flow], status="InProgress", start=now_ms() - 40 * minute)
    emulator.add_runs(3, flows=[flow], status="Successful")  # the watermark passes both
    args = ["--lookback", "10m"]
    assert_exit(export(emulator, local_dest, *args, "--max-open-age", "1h"), 0)
    # The oldest open run is now past --max-open-age (here: the age is lowered).
    assert_exit(export(emulator, local_dest, *args, "--max-open-age", "45m"), 0)
    emulator.finish_runs([flow])
    assert_exit(export(emulator, local_dest, *args, "--max-open-age", "45m"), 0)
    rows = read_output(local_dest.local_copy()).executions
    row = next(r for key, r in rows.items() if newer[0][1] in key)
    assert row["execution_status"] != "InProgress", row


def test_a_stuck_run_does_not_hide_a_newer_open_run(start_emulator, local_dest):
    """A stuck run and a run open for two hours: the newer one still holds the read back,
    so when it ends, its final version is exported."""
    emulator = start_emulator(flows=1, runs_per_flow=300, days=3)
    flow = emulator.flow_names()[0]
    emulator.finish_runs([flow])
    emulator.add_runs(1, flows=[flow], status="InProgress", start=now_ms() - 20 * DAY_MS)
    recent = emulator.add_runs(1, flows=[flow], status="InProgress", start=now_ms() - 2 * 3_600_000)
    emulator.add_runs(3, flows=[flow], status="Successful")  # newer runs: the watermark passes it
    assert_exit(export(emulator, local_dest, "--lookback", "10m"), 0)
    emulator.finish_runs([flow])
    assert_exit(export(emulator, local_dest, "--lookback", "10m"), 0)
    rows = read_output(local_dest.local_copy()).executions
    row = next(r for key, r in rows.items() if recent[0][1] in key)
    assert row["execution_status"] != "InProgress", row
