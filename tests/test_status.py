"""Run manifests under `_state/runs/` and `appflow-export status`: what operators see
of what the runs did, checked against the emulator's counters and data."""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import pytest

from conftest import HISTORY, OPEN_STATUSES, assert_exit, export, run_export, truth


def status(dest, *args: str) -> dict:
    result = run_export(["status", "--dest", dest.uri, *dest.args, "--format", "json", *args], dest.env)
    assert_exit(result, 0)
    return json.loads(result.stdout)


def manifest_keys(dest) -> list[str]:
    if dest.kind == "local":
        return sorted(p.name for p in (dest.path / "_state" / "runs").glob("*.json"))
    return sorted(o["Key"].rsplit("/", 1)[1] for o in dest.objects() if "/_state/runs/" in o["Key"])


def iso_ms(text: str | None) -> int | None:
    return None if text is None else round(dt.datetime.fromisoformat(text).timestamp() * 1000)


def summary_number(stdout: str, pattern: str) -> int:
    return int(re.search(pattern, stdout).group(1))


def test_each_run_leaves_a_manifest_and_status_shows_where_flows_stand(emulator, dest):
    runs = []
    records_in_aws = len(truth(emulator).executions)
    for step in range(2):
        if step:
            emulator.add_runs(2)
            emulator.finish_runs()
        emulator.reset_counters()
        result = export(emulator, dest)
        assert_exit(result, 0)
        runs.append((result, emulator.counters()))

    shown = status(dest)
    assert len(shown["runs"]) == 2 and len(manifest_keys(dest)) == 2
    for manifest, (result, counters) in zip(reversed(shown["runs"]), runs):
        assert manifest["exit_code"] == 0 and manifest["errors"] == []
        assert manifest["arguments"][:3] == ["run", "--dest", dest.uri]
        assert manifest["describe_calls"] == counters["operations"]["DescribeFlowExecutionRecords"]["calls"]
        assert {f["flow_name"]: f["describe_calls"] for f in manifest["flows"]} == counters["describe_calls_by_flow"]
        assert manifest["records"] == summary_number(result.stdout, r"records\s+(\d+) read")
        assert manifest["records"] == sum(f["records"] for f in manifest["flows"])
        assert manifest["files_written"] == summary_number(result.stdout, r"files\s+(\d+) written")
        assert manifest["run_id"] + ".json" in manifest_keys(dest)
    assert shown["runs"][0]["started_at"] > shown["runs"][1]["started_at"], "newest first"
    assert shown["runs"][1]["records"] == records_in_aws, "the first run read every record"
    assert all(f["cutoff"] is None for f in shown["runs"][1]["flows"]), "the first run read everything"
    assert all(f["cutoff"] is not None for f in shown["runs"][0]["flows"])

    data = truth(emulator)
    now = time.time() * 1000
    flows = {f["flow_name"]: f for f in shown["flows"]}
    assert set(flows) == set(emulator.flow_names())
    for name, f in flows.items():
        mine = [r for r in data.executions.values() if r["flow_name"] == name]
        newest = max(r["started_at"] for r in mine)
        assert iso_ms(f["watermark"]) == newest, name
        assert (f["account_id"], f["region"]) == (HISTORY["account"], HISTORY["region"])
        # Behind by the time since the last run read it to its end (later than its newest run).
        current_to = max(newest, iso_ms(shown["runs"][0]["started_at"]))
        assert abs(f["lag_seconds"] - (now - current_to) / 1000) < 120
        assert f["pages_sorted"] is True
        assert f["records_read"] >= len(mine)
    # Every open run was finished before the second export.
    assert not any(r["execution_status"] in OPEN_STATUSES for r in data.executions.values())
    assert all(f["oldest_open"] is None for f in flows.values())

    table = run_export(["status", "--dest", dest.uri, *dest.args], dest.env)
    assert_exit(table, 0)
    for name in emulator.flow_names():
        assert name in table.stdout
    assert shown["runs"][0]["run_id"] in table.stdout


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_only_the_newest_manifests_are_kept(emulator, make_dest, kind):
    dest = make_dest(kind)
    run_ids = []
    for _ in range(4):
        result = export(emulator, dest, "--keep-manifests", "2", "--log-format", "json")
        assert_exit(result, 0)
        run_ids.append(json.loads(result.stderr.splitlines()[-1])["fields"]["run_id"])
    assert manifest_keys(dest) == [f"{r}.json" for r in run_ids[2:]], "the last two runs' manifests"
    shown = status(dest, "--runs", "10")
    assert [m["run_id"] for m in shown["runs"]] == run_ids[:1:-1]


def test_a_run_with_failed_flows_records_them(start_emulator, local_dest):
    emulator = start_emulator()
    bad = emulator.flow_names()[2]
    emulator.set_faults({"malformed_flows": [bad]})
    assert_exit(export(emulator, local_dest, "--max-attempts", "1"), 1)
    [manifest] = status(local_dest)["runs"]
    assert manifest["exit_code"] == 1
    failed = [f for f in manifest["flows"] if f["error"]]
    assert [f["flow_name"] for f in failed] == [bad]
    assert len(manifest["errors"]) == 1 and bad in manifest["errors"][0]


def test_a_run_that_cannot_list_flows_records_why(emulator, local_dest):
    emulator.set_faults({"fail_next": 100})
    assert_exit(export(emulator, local_dest, "--max-attempts", "1"), 1)
    [manifest] = status(local_dest)["runs"]
    assert manifest["exit_code"] == 1 and manifest["flows"] == []
    assert any("ListFlows" in e for e in manifest["errors"]), manifest["errors"]


def test_status_of_a_destination_without_an_export(tmp_path):
    result = run_export(["status", "--dest", str(tmp_path / "nothing")])
    assert_exit(result, 3)
    assert str(tmp_path / "nothing") in result.stderr and "no export" in result.stderr
