"""The `flows` table: one file per account and region with a row per flow ListFlows
returned, rewritten only when a row changed, deleted flows kept with `deleted_at`."""

from __future__ import annotations

import duckdb

from conftest import HISTORY, assert_exit, export, flow_truth, now_ms, read_flows, run_export

FLOWS_FILE = f"flows/{HISTORY['account']}_{HISTORY['region']}.parquet"


def assert_flows(actual: dict, expected: dict) -> None:
    """Same flows, every expected column equal (`snapshot_at` is checked apart)."""
    assert actual.keys() == expected.keys(), (
        f"missing: {sorted(expected.keys() - actual.keys())}, unexpected: {sorted(actual.keys() - expected.keys())}")
    diffs = [f"{key[2][:40]} {col}: got {actual[key][col]!r}, want {want!r}"
             for key, row in expected.items() for col, want in row.items() if actual[key][col] != want]
    assert not diffs, "flows table differs from the emulator's flows:\n" + "\n".join(diffs[:10])


def test_flows_table_holds_every_listed_flow(emulator, dest):
    expected = flow_truth(emulator)
    before = now_ms()
    result = export(emulator, dest)
    after = now_ms()
    assert_exit(result, 0)
    assert f"{len(expected)} listed; flows table: 1 written, 0 unchanged" in result.stdout, result.stdout
    assert FLOWS_FILE in dest.snapshot(), sorted(dest.snapshot())
    actual = read_flows(dest.local_copy())
    assert_flows(actual, expected)
    assert {row["snapshot_at"] for row in actual.values()} <= set(range(before, after + 1))
    # Connector types and tags are what users join and filter on.
    assert any(len(row["tags"]) > 1 for row in actual.values())
    assert len({row["source_connector_type"] for row in actual.values()}) > 1


def test_a_rerun_with_nothing_new_leaves_the_file_alone(emulator, dest):
    assert_exit(export(emulator, dest), 0)
    first = dest.snapshot()[FLOWS_FILE]
    again = export(emulator, dest)
    assert_exit(again, 0)
    assert "flows table: 0 written, 1 unchanged" in again.stdout, again.stdout
    assert dest.snapshot()[FLOWS_FILE] == first, "the flows file was rewritten"


def test_changed_and_deleted_flows(emulator, local_dest):
    names = emulator.flow_names()
    changed, deleted = names[1], names[2]
    assert_exit(export(emulator, local_dest), 0)
    first = read_flows(local_dest.path)

    assert emulator.set_flow_status([changed], "Suspended") == 1
    assert emulator.delete_flows([deleted]) == 1
    before = now_ms()
    assert_exit(export(emulator, local_dest), 0)
    after = now_ms()
    second = read_flows(local_dest.path)

    expected = flow_truth(emulator)
    key_of = {k[2]: k for k in first}
    gone = key_of[deleted]
    # The deleted flow keeps its last row, with deleted_at from the run that missed it.
    assert second[gone]["deleted_at"] is not None and before <= second[gone]["deleted_at"] <= after
    assert {**second[gone], "deleted_at": None} == first[gone]
    assert_flows({k: v for k, v in second.items() if k != gone}, expected)
    # Only the changed flow got a new snapshot_at.
    assert second[key_of[changed]]["flow_status"] == "Suspended"
    assert before <= second[key_of[changed]]["snapshot_at"] <= after
    for name in set(names) - {changed, deleted}:
        assert second[key_of[name]]["snapshot_at"] == first[key_of[name]]["snapshot_at"], name

    # A third run changes nothing: deleted_at is set once.
    third = export(emulator, local_dest)
    assert_exit(third, 0)
    assert "flows table: 0 written, 1 unchanged" in third.stdout
    assert read_flows(local_dest.path) == second


def test_when_the_last_flows_are_deleted_they_are_marked(emulator, dest):
    """An empty listing has no ARN to name the account: the run asks STS, and marks
    the account's last flows deleted."""
    assert_exit(export(emulator, dest), 0)
    first = read_flows(dest.local_copy())
    assert emulator.delete_flows(emulator.flow_names()) == HISTORY["flows"]
    emulator.reset_counters()
    before = now_ms()
    result = export(emulator, dest, "--region", HISTORY["region"])
    after = now_ms()
    assert_exit(result, 0)
    assert "0 listed; flows table: 1 written, 0 unchanged" in result.stdout, result.stdout
    assert emulator.counters()["operations"]["GetCallerIdentity"]["calls"] == 1
    second = read_flows(dest.local_copy())
    assert second.keys() == first.keys()
    for key, row in second.items():
        assert row["deleted_at"] is not None and before <= row["deleted_at"] <= after, key
        assert {**row, "deleted_at": None} == first[key]


def test_a_selection_still_snapshots_every_flow(emulator, local_dest):
    names = emulator.flow_names()
    assert_exit(export(emulator, local_dest, "--flows", names[0]), 0)
    assert_flows(read_flows(local_dest.path), flow_truth(emulator))


def test_runs_join_flows_in_duckdb(emulator, local_dest):
    assert_exit(export(emulator, local_dest), 0)
    views = run_export(["schema", "--format", "duckdb", "--dest", local_dest.uri])
    assert_exit(views, 0)
    con = duckdb.connect()
    con.execute(views.stdout)
    by_source = dict(con.execute(
        "SELECT f.source_connector_type, count(*) FROM executions e "
        "JOIN flows f USING (account_id, region, flow_name) GROUP BY 1").fetchall())
    want: dict[str, int] = {}
    for flow in emulator.flows():
        source = flow["definition"]["sourceConnectorType"]
        want[source] = want.get(source, 0) + len(flow["records"])
    assert by_source == want
    tags = con.execute("SELECT typeof(tags), sum(cardinality(tags)), count(*) FILTER (list_contains(map_keys(tags), 'env')) "
                       "FROM flows GROUP BY 1").fetchall()
    definitions = [f["definition"] for f in emulator.flows()]
    assert tags == [("MAP(VARCHAR, VARCHAR)", sum(len(d["tags"]) for d in definitions),
                     sum("env" in d["tags"] for d in definitions))]
