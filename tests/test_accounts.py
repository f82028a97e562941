"""`--region a,b` and `--role-arn` (repeatable, or in the config): one job exports
several regions and accounts into one destination; rows carry account and region.
moto plays STS (an assumed role's key names the role's account, as AWS's do) and one
emulator serves every account and region its own flows, by the request's credential."""

from __future__ import annotations

import json

import pytest

from conftest import HISTORY, assert_exit, assert_export, run_export, truth_of

A, B = HISTORY["account"], "333344445555"
REGIONS = ["eu-west-2", "us-east-1"]
ROLE_A, ROLE_B = f"arn:aws:iam::{A}:role/appflow-export", f"arn:aws:iam::{B}:role/appflow-export"


@pytest.fixture
def emulator(start_emulator):
    """Accounts A (the job's own: a key that names no account is A's) and B, in two
    regions each."""
    return start_emulator(account=[A, B], region=REGIONS, flows=4, runs_per_flow=40, seed=7)


def run(emulator, moto_server, dest, *args):
    env = {"AWS_ENDPOINT_URL_APPFLOW": emulator.url, "AWS_ENDPOINT_URL_STS": moto_server.url, **dest.env}
    return run_export(["run", "--dest", dest.uri, *dest.args, *args], env)


def manifests(dest) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in (dest.path / "_state" / "runs").glob("*.json")),
                  key=lambda m: m["run_id"])


def list_calls(emulator, account, region) -> int:
    ops = emulator.tenant(account, region).counters()["operations"]
    return ops.get("ListFlows", {}).get("calls", 0)


def test_several_regions_into_one_destination(emulator, moto_server, local_dest):
    result = run(emulator, moto_server, local_dest, "--region", ",".join(REGIONS))
    assert_exit(result, 0)
    assert_export(local_dest, truth_of(emulator, [(A, r) for r in REGIONS]))
    assert sorted((m["account_id"], m["region"], m["role_arn"]) for m in manifests(local_dest)) == \
        [(A, "eu-west-2", None), (A, "us-east-1", None)]
    assert sorted(p.name for p in (local_dest.path / "flows").iterdir()) == [f"{A}_eu-west-2.parquet", f"{A}_us-east-1.parquet"]
    assert all(list_calls(emulator, B, r) == 0 for r in REGIONS)


def test_several_accounts_by_role_from_the_config(emulator, moto_server, dest, tmp_path):
    config = tmp_path / "org.toml"
    config.write_text(f'region = "eu-west-2"\nrole_arn = ["{ROLE_A}", "{ROLE_B}"]\n')
    result = run(emulator, moto_server, dest, "--config", str(config))
    assert_exit(result, 0)
    data = assert_export(dest, truth_of(emulator, [(A, "eu-west-2"), (B, "eu-west-2")]))
    assert {(r["account_id"], r["region"]) for r in data.executions.values()} == {(A, "eu-west-2"), (B, "eu-west-2")}
    # B's flows were read with B's credentials (moto's key for the assumed role), and
    # no region but the one asked for was read.
    assert list_calls(emulator, B, "eu-west-2") >= 1
    assert all(list_calls(emulator, account, "us-east-1") == 0 for account in (A, B))


def test_an_account_that_fails_does_not_stop_the_others(emulator, moto_server, local_dest):
    missing = "arn:aws:iam::999999999999:role/appflow-export"
    result = run(emulator, moto_server, local_dest, "--region", "eu-west-2", "--role-arn", f"{missing},{ROLE_B}")
    assert_exit(result, 1)
    assert "999999999999" in result.stdout + result.stderr
    assert_export(local_dest, truth_of(emulator, [(B, "eu-west-2")]))
    codes = sorted((m["role_arn"], m["account_id"], m["exit_code"]) for m in manifests(local_dest))
    assert codes == sorted([(missing, "999999999999", 1), (ROLE_B, B, 0)])


def test_a_role_that_is_not_an_arn_is_a_usage_error(local_dest):
    result = run_export(["run", "--dest", local_dest.uri, "--role-arn", "appflow-export"])
    assert_exit(result, 2)
    assert "'appflow-export'" in result.stderr


def test_shards_split_the_targets_when_there_are_several(emulator, moto_server, local_dest):
    """With several targets each shard exports whole targets (SHA-256 of
    "<account>/<region>" mod N): together they export everything once, and each
    target's flows are listed by one shard only."""
    places = [(a, r) for a in (A, B) for r in REGIONS]
    owners = {}
    for i in range(3):
        result = run(emulator, moto_server, local_dest, "--region", ",".join(REGIONS),
                     "--role-arn", f"{ROLE_A},{ROLE_B}", "--shard", f"{i}/3")
        assert_exit(result, 0)
        for m in manifests(local_dest):
            owners.setdefault((m["account_id"], m["region"]), set()).add(m["run_id"])
    assert_export(local_dest, truth_of(emulator, places))
    assert sorted(owners) == sorted(places) and all(len(runs) == 1 for runs in owners.values()), owners
    assert all(list_calls(emulator, *place) == 1 for place in places)


def test_each_account_and_region_is_exported_once_however_often_it_is_named(emulator, moto_server, local_dest):
    other_role_of_b = f"arn:aws:iam::{B}:role/another"
    result = run(emulator, moto_server, local_dest, "--region", "eu-west-2,eu-west-2",
                 "--role-arn", f"{ROLE_B},{ROLE_B},{other_role_of_b}")
    assert_exit(result, 0)
    assert [(m["account_id"], m["region"]) for m in manifests(local_dest)] == [(B, "eu-west-2")]
    assert_export(local_dest, truth_of(emulator, [(B, "eu-west-2")]))


def test_dry_run_lists_the_targets(emulator, moto_server, local_dest):
    result = run(emulator, moto_server, local_dest, "--region", ",".join(REGIONS), "--role-arn", ROLE_B, "--dry-run")
    assert_exit(result, 0)
    for region in REGIONS:
        assert f"{B} {region} (through {ROLE_B})" in result.stdout
    assert result.stdout.count("dry run: would export 4 flows") == 2
    assert not (local_dest.path / "_state").exists()


def test_a_stop_ends_the_targets_in_flight_and_starts_no_other(emulator, moto_server, local_dest):
    """SIGTERM during a run over several targets, one at a time: the target being read
    commits what it read and no other starts; the summary names each one not started;
    the next run exports everything exactly."""
    import signal
    import time

    from conftest import ExportProcess

    places = [(a, r) for a in (A, B) for r in REGIONS]
    for place in places:
        emulator.tenant(*place).set_faults({"latency_ms": 400})
    env = {"AWS_ENDPOINT_URL_APPFLOW": emulator.url, "AWS_ENDPOINT_URL_STS": moto_server.url}
    args = ["run", "--dest", local_dest.uri, "--region", ",".join(REGIONS), "--role-arn", f"{ROLE_A},{ROLE_B}",
            "--target-concurrency", "1", "--stop-timeout", "10s"]
    run = ExportProcess(args, env)
    deadline = time.monotonic() + 60
    runs = local_dest.path / "_state" / "runs"
    while time.monotonic() < deadline and not list(runs.glob("*.json")):
        time.sleep(0.05)
    run.proc.send_signal(signal.SIGTERM)
    result = run.wait(120)
    assert_exit(result, 143)
    not_started = [line for line in result.stdout.splitlines() if "NOT STARTED" in line]
    # The signal came once the first target was done: one or two more may have started.
    assert 1 <= len(not_started) <= 3, result.stdout
    assert all("SIGTERM" in line for line in not_started), not_started
    assert len(manifests(local_dest)) + len(not_started) == 4
    for place in places:
        emulator.tenant(*place).set_faults({})
    assert_exit(run_export(args[:-4], env), 0)
    assert_export(local_dest, truth_of(emulator, places))
