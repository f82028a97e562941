"""What a run over a large account costs and what it tells operators: `--skip-unchanged`
(API calls that follow what happened) and retention gaps (history AWS dropped before
any export read it), checked through the emulator's counters, the exported rows, the
summary, the run manifest and `status`."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time

from conftest import (
    ExportProcess, assert_exit, assert_export, export, now_ms, read_output, run_args, run_export, start_export,
    truth,
)


def describe_calls(emulator) -> dict[str, int]:
    """DescribeFlowExecutionRecords calls since the last reset, by flow."""
    return emulator.counters()["describe_calls_by_flow"]


def status(dest) -> dict:
    result = run_export(["status", "--dest", dest.uri, *dest.args, "--format", "json", "--runs", "1"],
                        dest.env)
    assert_exit(result, 0)
    return json.loads(result.stdout)


def epoch_ms(iso_text: str) -> int:
    """Epoch milliseconds of an ISO 8601 time as the manifest writes it."""
    return round(dt.datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp() * 1000)


def iso(millis: int) -> str:
    return dt.datetime.fromtimestamp(millis / 1000, dt.timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def test_skip_unchanged_exports_what_reading_every_flow_does_with_calls_only_for_what_changed(
        start_emulator, make_dest):
    emulator = start_emulator(flows=6, runs_per_flow=150)
    emulator.finish_runs()
    names = emulator.flow_names()
    every, skipping = make_dest("local"), make_dest("s3")
    seen = truth(emulator)

    def both() -> tuple[str, dict[str, int]]:
        """One run into each export, the same AWS data: the skipping run's summary and calls."""
        nonlocal seen
        seen = truth(emulator).merged_over(seen)
        assert_exit(export(emulator, every), 0)
        emulator.reset_counters()
        result = export(emulator, skipping, "--skip-unchanged")
        assert_exit(result, 0)
        calls = describe_calls(emulator)
        assert_export(every, seen)
        assert_export(skipping, seen)
        return result.stdout, calls

    _, calls = both()
    assert sorted(calls) == sorted(names), "a flow never read is read"
    stdout, calls = both()
    assert calls == {}, f"nothing changed, yet flows were paged: {calls}"
    assert "skipped    6 flows" in stdout, stdout
    run = status(skipping)["runs"][0]
    assert run["flows_skipped"] == 6 and run["describe_calls"] == 0, run
    assert sorted(f["flow_name"] for f in run["flows"] if f["skipped"]) == sorted(names), run["flows"]

    new, opened, dropped = names[0], names[1], names[2]
    emulator.add_runs(2, flows=[new], status="Successful")
    emulator.add_runs(1, flows=[opened], status="InProgress")
    _, calls = both()
    assert sorted(calls) == sorted([new, opened]), calls
    # The open run finishes: the listing shows it (and the flow held an open run anyway).
    emulator.finish_runs([opened])
    _, calls = both()
    assert sorted(calls) == [opened], calls
    # AWS drops a flow's oldest runs: its listing is unchanged, what was exported stays.
    oldest = min(r["startedAt"] for f in emulator.flows() if f["definition"]["flowName"] == dropped
                 for r in f["records"])
    assert emulator.drop_runs(round(oldest * 1000) + 3 * 86_400_000, flows=[dropped]) > 0
    stdout, calls = both()
    assert calls == {} and "skipped    6 flows" in stdout, (calls, stdout)


def test_a_run_that_does_not_change_the_listing_is_exported_at_its_flow_s_recheck(
        start_emulator, local_dest):
    emulator = start_emulator(flows=3, runs_per_flow=100)
    emulator.finish_runs()
    assert_exit(export(emulator, local_dest, "--skip-unchanged"), 0)
    flow = emulator.flow_names()[0]
    newest = max(r["startedAt"] for f in emulator.flows() if f["definition"]["flowName"] == flow
                 for r in f["records"])
    # A run that appears late, started before the newest: the listing still shows the newest.
    late = emulator.add_runs(1, flows=[flow], status="Successful", start=round(newest * 1000) - 600_000)
    emulator.reset_counters()
    assert_exit(export(emulator, local_dest, "--skip-unchanged"), 0)
    assert describe_calls(emulator) == {}, "the flow is read although its listing did not change"
    exported = {row["execution_id"] for row in read_output(local_dest.local_copy()).executions.values()}
    assert late[0][1] not in exported, "the late run was exported without a read"
    time.sleep(1.5)
    emulator.reset_counters()
    result = export(emulator, local_dest, "--skip-unchanged", "--recheck-every", "1s")
    assert_exit(result, 0)
    assert sorted(describe_calls(emulator)) == sorted(emulator.flow_names()), "every flow is due"
    assert_export(local_dest, truth(emulator))


def test_a_state_written_by_a_host_whose_clock_is_ahead_freezes_no_open_run_nor_puts_off_the_recheck(
        start_emulator, local_dest):
    """Which view of a flow's open runs the state keeps is decided by what was read,
    not by clocks: a host whose clock is a day ahead read last; the next run, on a host
    with the right clock, reads the open run ended and the state says so. And a last
    read dated after this host's now does not make `--skip-unchanged` leave the flow."""
    emulator = start_emulator(flows=2, runs_per_flow=20)
    emulator.finish_runs()
    flow = emulator.flow_names()[0]
    emulator.add_runs(1, flows=[flow], status="InProgress", start=now_ms() - 60_000)
    assert_exit(export(emulator, local_dest, "--skip-unchanged"), 0)
    assert {f["flow_name"]: f["oldest_open"] for f in status(local_dest)["flows"]}[flow] is not None

    [path] = (local_dest.path / "_state" / "flows").glob("*.json")

    def read_by_a_host_a_day_ahead() -> None:
        """The state as a run of this release on that host leaves it: its read, and the
        flow's last read, dated a day ahead."""
        doc = json.loads(path.read_text())
        ahead = now_ms() + 86_400_000
        for state in doc["flows"].values():
            state["read_started_ms"] = ahead
            assert state["views"], "the state keeps the reads"
            for view in state["views"]:
                view["started_ms"] = ahead
        path.write_text(json.dumps(doc))

    read_by_a_host_a_day_ahead()
    emulator.finish_runs([flow])
    assert_exit(export(emulator, local_dest, "--skip-unchanged"), 0)
    assert {f["flow_name"]: f["oldest_open"] for f in status(local_dest)["flows"]}[flow] is None, \
        "the open-run state was frozen by a clock ahead"
    assert_export(local_dest, truth(emulator))

    # Nothing happens; a host a day ahead read last. A run that appears without
    # changing the listing is exported at the recheck counted from this host's clock.
    read_by_a_host_a_day_ahead()
    newest = max(r["startedAt"] for f in emulator.flows() if f["definition"]["flowName"] == flow
                 for r in f["records"])
    emulator.add_runs(1, flows=[flow], status="Successful", start=round(newest * 1000) - 600_000)
    emulator.reset_counters()
    assert_exit(export(emulator, local_dest, "--skip-unchanged", "--recheck-every", "1h"), 0)
    assert sorted(describe_calls(emulator)) == sorted(emulator.flow_names()), "the recheck was put off"
    assert_export(local_dest, truth(emulator))


def test_a_listing_without_a_time_never_skips_a_flow(start_emulator, local_dest):
    """A `lastRunExecutionDetails` with a status and no time cannot tell two runs with
    the same status apart: the flow is read, and its new run exported, at once."""
    emulator = start_emulator(flows=2, runs_per_flow=20)
    emulator.finish_runs()
    emulator.set_faults({"listing_without_time": True})
    assert_exit(export(emulator, local_dest, "--skip-unchanged"), 0)
    flow = emulator.flow_names()[0]
    [(_, new)] = emulator.add_runs(1, flows=[flow], status="Successful", start=now_ms() - 1_000)
    emulator.reset_counters()
    assert_exit(export(emulator, local_dest, "--skip-unchanged"), 0)
    assert sorted(describe_calls(emulator)) == sorted(emulator.flow_names()), "every flow is read"
    exported = {row["execution_id"] for row in read_output(local_dest.local_copy()).executions.values()}
    assert new in exported


def test_a_read_that_no_longer_reaches_the_watermark_is_a_retention_gap(start_emulator, dest):
    emulator = start_emulator(flows=4, runs_per_flow=150)
    emulator.finish_runs()
    assert_exit(export(emulator, dest), 0)
    exported = truth(emulator)
    lost, quiet = emulator.flow_names()[0], emulator.flow_names()[1:]
    watermark = max(row["started_at"] for row in exported.only(lost).executions.values())
    # The job stops; the flow runs on (the first run never read); AWS drops everything
    # older than the second new run, the newest exported run with it.
    start = now_ms() + 60_000
    added = emulator.add_runs(4, flows=[lost], status="Successful", start=start)
    runs = {r["executionId"]: round(r["startedAt"] * 1000) for f in emulator.flows()
            if f["definition"]["flowName"] == lost for r in f["records"]}
    second = runs[added[1][1]]
    assert emulator.drop_runs(second, flows=[lost]) > 0
    result = export(emulator, dest)
    assert_exit(result, 0)
    warnings = [line for line in result.stderr.splitlines() if "retention gap" in line]
    assert len(warnings) == 1, result.stderr
    assert lost in warnings[0] and iso(watermark) in warnings[0] and iso(second) in warnings[0], warnings
    assert "gaps       1 flows" in result.stdout, result.stdout
    # Everything exported before stays; the runs AWS still holds are added.
    assert_export(dest, truth(emulator).merged_over(exported))
    shown = status(dest)
    run = shown["runs"][0]
    assert run["retention_gaps"] == 1, run
    gaps = {f["flow_name"]: f["retention_gap"] for f in run["flows"] if f["retention_gap"]}
    assert gaps == {lost: {"after": iso(watermark), "before": iso(second)}}, gaps
    by_flow = {f["flow_name"]: f for f in shown["flows"]}
    assert by_flow[lost]["retention_gaps"] == 1, by_flow[lost]
    assert by_flow[lost]["last_retention_gap"]["after"] == iso(watermark), by_flow[lost]
    assert all(by_flow[q]["retention_gaps"] == 0 for q in quiet), by_flow
    # The next run reaches the new watermark: no gap again, the one found is kept.
    result = export(emulator, dest)
    assert_exit(result, 0)
    assert "retention gap" not in result.stderr and "gaps" not in result.stdout, result.stderr
    assert status(dest)["runs"][0]["retention_gaps"] == 0
    assert {f["flow_name"]: f["retention_gaps"] for f in status(dest)["flows"]}[lost] == 1


def test_flows_with_no_new_runs_or_a_whole_history_dropped_raise_no_gap(start_emulator, local_dest):
    emulator = start_emulator(flows=3, runs_per_flow=150)
    emulator.finish_runs()
    assert_exit(export(emulator, local_dest), 0)
    names = emulator.flow_names()
    # One flow's history is dropped whole (its runs only aged out: none since).
    emulator.drop_runs(now_ms() + 86_400_000, flows=[names[0]])
    for _ in range(2):
        result = export(emulator, local_dest)
        assert_exit(result, 0)
        assert "retention gap" not in result.stderr, result.stderr
        assert status(local_dest)["runs"][0]["retention_gaps"] == 0


def test_a_flow_deleted_and_created_again_under_its_name_raises_only_its_own_gap(start_emulator, local_dest):
    """The flow created again has the old one's name and ARN, so the export's state is
    the old flow's: its new history starts after that watermark without a run lost,
    unless AWS no longer returns a run its listing shows."""
    emulator = start_emulator(flows=4, runs_per_flow=150)
    emulator.finish_runs()
    assert_exit(export(emulator, local_dest), 0)
    exported = truth(emulator)
    ran, idle, lost = emulator.flow_names()[:3]
    assert emulator.recreate_flows([ran, idle, lost]) == 3
    emulator.add_runs(3, flows=[ran, lost], status="Successful", start=now_ms() + 60_000)
    # AWS drops the new `lost` flow's runs before any export reads them.
    assert emulator.drop_runs(now_ms() + 86_400_000, flows=[lost]) == 3
    [created] = [round(f["definition"]["createdAt"] * 1000) for f in emulator.flows()
                 if f["definition"]["flowName"] == lost]
    result = export(emulator, local_dest)
    assert_exit(result, 0)
    warnings = [line for line in result.stderr.splitlines() if "retention gap" in line]
    assert len(warnings) == 1 and f"'{lost}'" in warnings[0] and iso(created) in warnings[0], result.stderr
    assert sum("flow created again under its name" in line for line in result.stderr.splitlines()) == 3
    assert status(local_dest)["runs"][0]["retention_gaps"] == 1
    # Found once, said once: the next run's listing shows what this one's did.
    result = export(emulator, local_dest)
    assert_exit(result, 0)
    assert "retention gap" not in result.stderr, result.stderr
    assert "flow created again" not in result.stderr, result.stderr
    assert status(local_dest)["runs"][0]["retention_gaps"] == 0
    # The old flow's runs stay exported; the new flow's are added.
    assert_export(local_dest, truth(emulator).merged_over(exported))


# ----------------------------------------------------------------------------- SIGTERM and SIGINT


def wait_for_calls(emulator, calls: int, proc, timeout: float = 60) -> None:
    """Until the emulator has answered `calls` DescribeFlowExecutionRecords requests."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = emulator.counters()["operations"].get("DescribeFlowExecutionRecords", {}).get("calls", 0)
        if done >= calls:
            return
        assert proc.poll() is None, "the export ended before it could be stopped"
        time.sleep(0.02)
    raise AssertionError(f"fewer than {calls} calls within {timeout}s")


def leftovers(*folders) -> list[str]:
    """Temporary files and folders the export leaves behind: staging folders, and the
    local store's temporary files."""
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.name.startswith(("appflow-export-stage-", ".tmp-")):
                found.append(str(path))
    return found


def slow_emulator(start_emulator, flows: int, runs: int):
    """150 ms a call: a flow of 5 pages takes 0.75 s, so a test that signals after a
    dozen calls has seconds of margin before the run could end by itself."""
    emulator = start_emulator(flows=flows, runs_per_flow=runs)
    emulator.finish_runs()
    emulator.set_faults({"latency_ms": 150})
    return emulator


def test_a_backfill_sent_sigterm_keeps_the_flows_it_finished_and_its_rerun_reads_only_the_rest(
        start_emulator, dest, tmp_path):
    emulator = slow_emulator(start_emulator, flows=16, runs=500)  # 5 pages a flow, 6 s in all
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    args = ["backfill", "--dest", dest.uri, *dest.args, "--since", "2020-01-01", "--concurrency", "2"]
    env = {"AWS_ENDPOINT_URL_APPFLOW": emulator.url, "AWS_ENDPOINT_URL_STS": emulator.url,
           "TMPDIR": str(scratch), **dest.env}
    run = ExportProcess(args, env)
    wait_for_calls(emulator, 12, run.proc)  # two flows read, two more being read
    run.proc.send_signal(signal.SIGTERM)
    result = run.wait(60)
    assert_exit(result, 143)
    assert "SIGTERM" in result.stderr and "INTERRUPTED by SIGTERM" in result.stdout, result.stdout
    manifest = status(dest)["runs"][0]
    assert manifest["interrupted"] == "SIGTERM" and manifest["exit_code"] == 143, manifest
    finished = {f["flow_name"] for f in manifest["flows"] if not f["error"] and not f["interrupted"]}
    # The flows in flight had the stop timeout (25 s) to end: they did.
    assert not [f for f in manifest["flows"] if f["interrupted"]], manifest["flows"]
    assert 2 <= len(finished) < 16, finished
    expected = truth(emulator)
    assert_export(dest, expected.only(*finished))
    assert not leftovers(scratch, dest.local_copy() if dest.kind == "local" else scratch), "left behind"
    emulator.set_faults({})
    emulator.reset_counters()
    assert_exit(run_export(args, env), 0)
    read = set(describe_calls(emulator))
    assert read == set(emulator.flow_names()) - finished, (read, finished)
    assert_export(dest, expected)


def test_a_sigterm_while_the_last_flows_are_read_gives_up_nothing(start_emulator, local_dest):
    """Every flow already being read, none waiting: a SIGTERM now gives them the stop
    timeout, they end in it, and nothing was given up. The run is complete: exit 0, no
    interruption in its manifest, the flows table written, the signal logged."""
    emulator = slow_emulator(start_emulator, flows=3, runs=500)  # 5 pages a flow, all at once
    run = start_export(emulator, local_dest)
    wait_for_calls(emulator, 3, run.proc)  # every flow's first page asked for: the queue is empty
    run.proc.send_signal(signal.SIGTERM)
    result = run.wait(60)
    assert_exit(result, 0)
    assert "SIGTERM" in result.stderr and "every flow was read to its end" in result.stderr, result.stderr
    manifest = status(local_dest)["runs"][0]
    assert manifest["interrupted"] is None and manifest["exit_code"] == 0, manifest
    assert list((local_dest.path / "flows").glob("*.parquet")), "the flows table was written"
    assert_export(local_dest, truth(emulator))


def test_an_incremental_run_sent_sigterm_and_run_again_is_exact(start_emulator, local_dest, tmp_path):
    emulator = start_emulator(flows=12, runs_per_flow=100)
    emulator.finish_runs()
    assert_exit(export(emulator, local_dest), 0)
    emulator.add_runs(400, status="Successful")  # 4 new pages a flow
    emulator.set_faults({"latency_ms": 150})
    emulator.reset_counters()
    # No grace: the flows being read are given up whole. One call at a time, for the
    # four flows read at once in turn: after 20 pages four flows are read
    # (5 pages each), and the next four are being read.
    run = start_export(emulator, local_dest, "--concurrency", "1", "--stop-timeout", "0s")
    wait_for_calls(emulator, 24, run.proc)
    run.proc.send_signal(signal.SIGINT)
    result = run.wait(60)
    assert_exit(result, 130)
    manifest = status(local_dest)["runs"][0]
    assert manifest["interrupted"] == "SIGINT", manifest
    given_up = {f["flow_name"] for f in manifest["flows"] if f["interrupted"]}
    finished = {f["flow_name"] for f in manifest["flows"] if not f["error"] and not f["interrupted"]}
    assert given_up and finished, manifest["flows"]
    # What a given-up flow had read is not in the export: only what the first run had.
    before = {row["execution_id"] for row in read_output(local_dest.local_copy()).executions.values()}
    now = truth(emulator)
    for flow in given_up:
        assert {row["execution_id"] for row in now.only(flow).executions.values()} - before, flow
        new = [k for k, row in now.only(flow).executions.items() if row["execution_id"] in before]
        assert len(new) == 100, f"{flow}: rows of a flow given up were committed"
    emulator.set_faults({})
    assert_exit(export(emulator, local_dest), 0)
    assert_export(local_dest, truth(emulator))


def start_with_scratch(emulator, local_dest, tmp_path):
    """`run` into `local_dest` with a temporary folder of its own, in the background:
    the process, its arguments and environment (to run it again) and that folder."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    args, env = ["run", "--dest", local_dest.uri], {
        "AWS_ENDPOINT_URL_APPFLOW": emulator.url, "AWS_ENDPOINT_URL_STS": emulator.url, "TMPDIR": str(scratch)}
    return ExportProcess(args, env), args, env, scratch


def test_a_second_signal_stops_at_once_and_leaves_nothing_partial(start_emulator, local_dest, tmp_path):
    emulator = start_emulator(flows=6, runs_per_flow=1000)  # 10 pages, 10 s a flow
    emulator.finish_runs()
    emulator.set_faults({"latency_ms": 1000})
    run, _, _, scratch = start_with_scratch(emulator, local_dest, tmp_path)
    wait_for_calls(emulator, 1, run.proc)
    run.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert run.proc.poll() is None, "the first signal stopped the run at once"
    started = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    result = run.wait(60)
    # Ignored, it would leave the flows in flight 8 s or more to end.
    assert time.monotonic() - started < 5, "the second signal did not stop the run at once"
    assert not leftovers(scratch, local_dest.path), leftovers(scratch, local_dest.path)
    assert_exit(result, 143)
    assert "stopped at once by a second SIGTERM" in result.stderr, result.stderr
    emulator.set_faults({})
    assert_exit(export(emulator, local_dest), 0)
    assert_export(local_dest, truth(emulator))


def test_a_staging_folder_a_killed_run_left_is_removed_by_a_later_run(start_emulator, local_dest, tmp_path):
    emulator = slow_emulator(start_emulator, flows=6, runs=500)
    run, args, env, scratch = start_with_scratch(emulator, local_dest, tmp_path)
    wait_for_calls(emulator, 3, run.proc)
    run.proc.kill()
    assert run.wait(60).returncode == -9
    [left] = [p for p in scratch.iterdir() if p.name.startswith("appflow-export-stage-")]
    # Once it has been left unchanged for a minute (here: made to look so), the next
    # run's staging removes it; a run still using its folder holds a lock on it.
    a_while_ago = time.time() - 120
    os.utime(left, (a_while_ago, a_while_ago))
    emulator.set_faults({})
    result = run_export(args, env)
    assert_exit(result, 0)
    assert not left.exists() and not leftovers(scratch), leftovers(scratch)
    assert "removed a staging folder a killed run left behind" in result.stderr, result.stderr
    assert_export(local_dest, truth(emulator))


# ----------------------------------------------------------------------------- --metrics emf


def emf_lines(stdout: str) -> list[dict]:
    """The CloudWatch Embedded Metric Format lines of a run's stdout, each checked
    against the specification: an `_aws` member with an integer millisecond
    `Timestamp` and `CloudWatchMetrics` directives (a `Namespace`, `Dimensions` as
    arrays of member names whose values are strings, `Metrics` as `{Name, Unit}`),
    and every metric named there present at the root as a number."""
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    units = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
             "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
             "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second",
             "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second",
             "Count/Second", "None"}
    for doc in lines:
        meta = doc["_aws"]
        assert isinstance(meta["Timestamp"], int) and abs(meta["Timestamp"] - now_ms()) < 600_000, meta
        assert meta["CloudWatchMetrics"], meta
        for directive in meta["CloudWatchMetrics"]:
            assert set(directive) == {"Namespace", "Dimensions", "Metrics"}, directive
            assert isinstance(directive["Namespace"], str) and directive["Namespace"], directive
            for dims in directive["Dimensions"]:
                assert len(dims) <= 30
                assert all(isinstance(doc.get(d), str) and doc[d] for d in dims), (dims, doc)
            assert 1 <= len(directive["Metrics"]) <= 100
            for metric in directive["Metrics"]:
                assert set(metric) <= {"Name", "Unit", "StorageResolution"} and metric.get("Unit", "None") in units
                value = doc[metric["Name"]]
                assert isinstance(value, (int, float)) and not isinstance(value, bool), (metric, value)
    return lines


def test_metrics_emf_prints_a_line_per_account_and_region_and_one_for_the_run(start_emulator, dest):
    emulator = start_emulator(flows=4, runs_per_flow=150)
    bad = emulator.flow_names()[0]
    assert len(truth(emulator).only(bad).executions) > 100, "the bad flow needs a good first page"
    emulator.set_faults({"throttle_fraction": 0.1, "malformed_flows": [bad]})
    result = export(emulator, dest, "--metrics", "emf", "--job-name", "nightly")
    assert_exit(result, 1)
    lines = emf_lines(result.stdout)
    assert len(lines) == 2, result.stdout
    target, run = lines
    assert target["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Account", "JobName", "Region"]]
    assert (target["Account"], target["Region"], target["JobName"]) == ("210987654321", "eu-west-2", "nightly")
    assert run["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["JobName"]]
    assert run["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "AppFlowExport"
    names = [m["Name"] for m in run["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert names == ["RunsSucceeded", "FlowsExported", "FlowsFailed", "FlowsSkipped", "RecordsRead",
                     "DataFilesWritten", "ApiCalls", "ThrottledCalls", "ConcurrencyLimitLowest",
                     "ConcurrencyLimitHighest", "WriteConflicts", "RetentionGaps",
                     "MaxWatermarkLagSeconds", "RunSeconds"], names
    ops = emulator.counters()["operations"]
    appflow = [ops[op] for op in ("ListFlows", "DescribeFlowExecutionRecords")]
    assert ops["DescribeFlowExecutionRecords"]["throttled"] > 0, ops
    manifest = status(dest)["runs"][0]
    for line in (target, run):
        assert line["RunsSucceeded"] == 0 and line["FlowsFailed"] == 1 and line["FlowsExported"] == 3, line
        assert line["ApiCalls"] == sum(o["calls"] for o in appflow), (line, ops)
        assert line["ThrottledCalls"] == sum(o["throttled"] for o in appflow), (line, ops)
        assert line["RecordsRead"] == manifest["records"] and line["DataFilesWritten"] == manifest["files_written"]
        assert line["RetentionGaps"] == 0 and line["FlowsSkipped"] == 0 and line["RunSeconds"] > 0
    # Every flow exported was read to its end by this run (the bad one never was).
    lag = (run["_aws"]["Timestamp"] - epoch_ms(manifest["started_at"])) / 1000
    assert 0 < run["MaxWatermarkLagSeconds"] <= lag + 1, (run["MaxWatermarkLagSeconds"], lag)
    assert manifest["throttled_calls"] == target["ThrottledCalls"], manifest

    emulator.set_faults({})
    result = export(emulator, dest, "--metrics", "emf")
    assert_exit(result, 0)
    target, run = emf_lines(result.stdout)
    assert run["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]], run
    assert target["RunsSucceeded"] == 1 and run["RunsSucceeded"] == 1 and run["FlowsExported"] == 4, run


def test_metrics_emf_run_prints_the_run_line_only(emulator, local_dest):
    """`--metrics emf-run`: one line for the whole run, none per account and region
    (each would add 14 custom metrics), with the same numbers as `emf`'s run line."""
    result = export(emulator, local_dest, "--metrics", "emf-run", "--job-name", "org")
    assert_exit(result, 0)
    [run] = emf_lines(result.stdout)
    assert run["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["JobName"]], run
    assert "Account" not in run and run["RunsSucceeded"] == 1 and run["FlowsExported"] == len(emulator.flow_names())


def test_a_run_that_never_reached_its_flows_sends_no_lag(emulator, local_dest):
    """ListFlows refused: the run knows no flow's lag, and a 0 would tell an alarm all is well."""
    emulator.set_faults({"fail_next": 100})
    result = export(emulator, local_dest, "--metrics", "emf", "--max-attempts", "1")
    assert_exit(result, 1)
    lines = emf_lines(result.stdout)
    assert len(lines) == 2, result.stdout
    for line in lines:
        names = [m["Name"] for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
        assert "MaxWatermarkLagSeconds" not in names and "MaxWatermarkLagSeconds" not in line, line
        assert line["RunsSucceeded"] == 0 and "RunSeconds" in names, line


def test_a_flow_left_unread_as_unchanged_lags_from_its_last_read(start_emulator, local_dest):
    """`--skip-unchanged` does not read a flow whose listing did not change, but a run
    the listing does not show yet may have come since: the lag counts from the flow's
    last read, not from this run."""
    emulator = start_emulator(flows=3, runs_per_flow=20)
    emulator.finish_runs()
    assert_exit(export(emulator, local_dest, "--skip-unchanged"), 0)
    time.sleep(2.5)
    result = export(emulator, local_dest, "--skip-unchanged", "--metrics", "emf")
    assert_exit(result, 0)
    assert "skipped    3 flows" in result.stdout, result.stdout
    run = emf_lines(result.stdout)[-1]
    assert run["MaxWatermarkLagSeconds"] >= 2.5, run["MaxWatermarkLagSeconds"]


def test_the_lag_is_since_each_flow_s_last_good_read_not_since_its_last_run(start_emulator, local_dest):
    """Flows that last ran a month ago and are read every run are not behind; a flow
    whose reads fail falls behind from its last good one."""
    emulator = start_emulator(flows=3, runs_per_flow=50, end=now_ms() - 30 * 86_400_000)
    emulator.finish_runs()
    result = export(emulator, local_dest, "--metrics", "emf")
    assert_exit(result, 0)
    _, run = emf_lines(result.stdout)
    assert run["MaxWatermarkLagSeconds"] < 60, run
    shown = status(local_dest)
    assert all(f["lag_seconds"] < 60 for f in shown["flows"]), shown["flows"]
    good_read = epoch_ms(shown["runs"][0]["started_at"])
    emulator.set_faults({"malformed_flows": [emulator.flow_names()[0]]})
    time.sleep(2)
    result = export(emulator, local_dest, "--metrics", "emf", "--max-attempts", "1")
    assert_exit(result, 1)
    _, run = emf_lines(result.stdout)
    # The lag is taken when the run ends, its manifest's finish (to the millisecond).
    behind = (epoch_ms(status(local_dest)["runs"][0]["finished_at"]) - good_read) / 1000
    assert behind > 2 and abs(run["MaxWatermarkLagSeconds"] - behind) < 0.01, (run, behind)
    lags = {f["flow_name"]: f["lag_seconds"] for f in status(local_dest)["flows"]}
    assert lags[emulator.flow_names()[0]] >= 2 and max(lags.values()) < 60, lags


def test_a_backfill_under_the_account_s_rate_limit_exports_every_flow(start_emulator, make_dest):
    """AWS answers requests above the account's rate with 429 ThrottlingException: the
    limit of calls in flight falls to what the rate allows, throttled calls are
    retried, and no flow fails (the rate reached is in BENCHMARKS.md,
    `bench/ratelimit.sh` and `bench/throttle.sh`)."""
    emulator = start_emulator(flows=20, runs_per_flow=300)
    emulator.set_faults({"latency_ms": 20, "rate_limit": 25})
    dest = make_dest("s3")
    args, env = run_args(emulator, dest, "--concurrency", "16", "--metrics", "emf")
    args[0:1] = ["backfill", "--since", "2020-01-01"]
    result = run_export(args, env)
    assert_exit(result, 0)
    ops = emulator.counters()["operations"]
    throttled = sum(o["throttled"] for o in ops.values())
    assert throttled > 0, f"the limit was never reached: {ops}"
    run = emf_lines(result.stdout)[-1]
    assert run["FlowsFailed"] == 0 and run["ThrottledCalls"] == throttled, (run, ops)
    emulator.set_faults({})
    assert_export(dest, truth(emulator))
