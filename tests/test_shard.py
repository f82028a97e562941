"""`--shard i/N`: N processes started at once against one destination produce what a
single run produces; each owns the flows the documented hash gives it."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import (HISTORY, assert_exit, assert_export, export, read_flows, read_output, run_export,
                      start_export, truth)

FLOWS = 12


def shard_of(account: str, region: str, name: str, count: int) -> int:
    """The documented formula (README, `--shard`), computed independently."""
    digest = hashlib.sha256(f"{account}/{region}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def owned(emulator, index: int, count: int) -> set[str]:
    return {n for n in emulator.flow_names() if shard_of(HISTORY["account"], HISTORY["region"], n, count) == index}


def without_exported_at(data):
    for row in data.executions.values():
        row.pop("exported_at", None)
    return data


def watermarks(dest) -> dict:
    key = f"_state/flows/{HISTORY['account']}_{HISTORY['region']}.json"
    if dest.kind == "local":
        state = json.loads((dest.path / key).read_text())
    else:
        state = json.loads(dest.client.get_object(Bucket=dest.bucket, Key=f"{dest.prefix}/{key}")["Body"].read())
    return {name: (f["watermark_ms"], f["oldest_open_ms"], f["pages_sorted"]) for name, f in state["flows"].items()}


def test_four_shards_at_once_equal_one_run(start_emulator, make_dest, dest):
    emulator = start_emulator(flows=FLOWS)
    expected = truth(emulator)
    shards = [start_export(emulator, dest, "--shard", f"{i}/4") for i in range(4)]
    results = [p.wait() for p in shards]
    for i, result in enumerate(results):
        assert_exit(result, 0)
        mine = owned(emulator, i, 4)
        assert f"shard      {i}/4: {len(mine)} of {FLOWS} selected flows" in result.stdout, result.stdout
    assert sum(len(owned(emulator, i, 4)) for i in range(4)) == FLOWS
    assert all(owned(emulator, i, 4) for i in range(4)), "12 flows fall in every one of 4 shards"
    sharded = assert_export(dest, expected)

    single = make_dest(dest.kind)
    assert_exit(export(emulator, single), 0)
    assert without_exported_at(read_output(single.local_copy())) == without_exported_at(sharded)
    assert watermarks(dest) == watermarks(single)
    # The flows table: the same rows (snapshot_at is when each copy listed).
    flows = [{k: {c: v for c, v in row.items() if c != "snapshot_at"} for k, row in read_flows(d.local_copy()).items()}
             for d in (dest, single)]
    assert flows[0] == flows[1] and len(flows[0]) == FLOWS

    # Four shards again: nothing new, nothing written.
    before = dest.snapshot()
    for p in [start_export(emulator, dest, "--shard", f"{i}/4") for i in range(4)]:
        assert_exit(p.wait(), 0)
    assert dest.snapshot() == before


def test_shard_auto_reads_the_batch_array_variables(start_emulator, local_dest):
    emulator = start_emulator(flows=FLOWS)
    args = ["run", "--dest", local_dest.uri, "--shard", "auto"]
    env = {"AWS_ENDPOINT_URL_APPFLOW": emulator.url, "AWS_BATCH_JOB_ARRAY_INDEX": "1",
           "AWS_BATCH_JOB_ARRAY_SIZE": "3"}
    result = run_export(args, env)
    assert_exit(result, 0)
    mine = owned(emulator, 1, 3)
    assert f"shard      1/3: {len(mine)} of {FLOWS} selected flows" in result.stdout
    exported = {row["flow_name"] for row in read_output(local_dest.path).executions.values()}
    assert exported == mine


def test_shard_auto_outside_an_array_job_exports_every_flow(emulator, local_dest):
    result = run_export(["run", "--dest", local_dest.uri, "--shard", "auto"],
                        {"AWS_ENDPOINT_URL_APPFLOW": emulator.url})
    assert_exit(result, 0)
    exported = {row["flow_name"] for row in read_output(local_dest.path).executions.values()}
    assert exported == set(emulator.flow_names())


@pytest.mark.parametrize("shard, env, message", [
    ("4/4", {}, "'4/4'"),
    ("1/0", {}, "'1/0'"),
    ("two/4", {}, "'two'"),
    ("auto", {"AWS_BATCH_JOB_ARRAY_INDEX": "0"}, "AWS_BATCH_JOB_ARRAY_SIZE"),
    ("auto", {"AWS_BATCH_JOB_ARRAY_INDEX": "3", "AWS_BATCH_JOB_ARRAY_SIZE": "3"}, "numbered 0 to 2"),
])
def test_a_bad_shard_is_a_usage_error_before_any_call(emulator, local_dest, shard, env, message):
    emulator.reset_counters()
    result = run_export(["run", "--dest", local_dest.uri, "--shard", shard],
                        {"AWS_ENDPOINT_URL_APPFLOW": emulator.url, **env})
    assert_exit(result, 2)
    assert message in result.stderr, result.stderr
    assert emulator.api_calls() == 0
    assert not list(local_dest.path.rglob("*.parquet"))
