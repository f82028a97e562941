"""`--region a,b` and `--role-arn` (repeatable, or in the config): one job exports
several regions and accounts into one destination; rows carry account and region.
A router (aws_router.py) plays AWS: STS AssumeRole, and one emulator per account and
region behind one AppFlow endpoint."""

from __future__ import annotations

import json

import pytest

from aws_router import Router
from conftest import HISTORY, Dataset, assert_exit, assert_export, run_export, truth

A, B = HISTORY["account"], "333344445555"
ROLE_A, ROLE_B = f"arn:aws:iam::{A}:role/appflow-export", f"arn:aws:iam::{B}:role/appflow-export"


@pytest.fixture
def world(start_emulator):
    places = {(A, "eu-west-2"): 7, (A, "us-east-1"): 8, (B, "eu-west-2"): 9}
    emulators = {place: start_emulator(account=place[0], region=place[1], flows=4, runs_per_flow=40, seed=seed)
                 for place, seed in places.items()}
    router = Router({place: emu.url for place, emu in emulators.items()}, base_account=A)
    yield emulators, router
    router.stop()


def combined(*emulators) -> Dataset:
    data = Dataset()
    for emu in emulators:
        part = truth(emu)
        data.executions.update(part.executions)
        data.catalog.update(part.catalog)
    return data


def run(router, dest, *args):
    env = {"AWS_ENDPOINT_URL_APPFLOW": router.url, "AWS_ENDPOINT_URL_STS": router.url, **dest.env}
    return run_export(["run", "--dest", dest.uri, *dest.args, *args], env)


def manifests(dest) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in (dest.path / "_state" / "runs").glob("*.json")),
                  key=lambda m: m["run_id"])


def test_several_regions_into_one_destination(world, local_dest):
    emulators, router = world
    result = run(router, local_dest, "--region", "eu-west-2,us-east-1")
    assert_exit(result, 0)
    assert_export(local_dest, combined(emulators[(A, "eu-west-2")], emulators[(A, "us-east-1")]))
    assert router.assumed == []
    assert [(m["region"], m["role_arn"]) for m in manifests(local_dest)] == [("eu-west-2", None), ("us-east-1", None)]
    assert sorted(p.name for p in (local_dest.path / "flows").iterdir()) == [f"{A}_eu-west-2.parquet", f"{A}_us-east-1.parquet"]


def test_several_accounts_by_role_from_the_config(world, dest, tmp_path):
    emulators, router = world
    config = tmp_path / "org.toml"
    config.write_text(f'region = "eu-west-2"\nrole_arn = ["{ROLE_A}", "{ROLE_B}"]\n')
    result = run(router, dest, "--config", str(config))
    assert_exit(result, 0)
    assert set(router.assumed) == {ROLE_A, ROLE_B}
    data = assert_export(dest, combined(emulators[(A, "eu-west-2")], emulators[(B, "eu-west-2")]))
    assert {(r["account_id"], r["region"]) for r in data.executions.values()} == {(A, "eu-west-2"), (B, "eu-west-2")}
    # Each account's calls went to its own emulator, signed with the assumed role's key.
    assert router.calls[(B, "eu-west-2", "/list-flows")] >= 1
    assert not any(region == "us-east-1" for _, region, _ in router.calls)


def test_an_account_that_fails_does_not_stop_the_others(world, local_dest):
    emulators, router = world
    missing = "arn:aws:iam::999999999999:role/appflow-export"
    result = run(router, local_dest, "--region", "eu-west-2", "--role-arn", f"{missing},{ROLE_B}")
    assert_exit(result, 1)
    assert "999999999999" in result.stdout + result.stderr
    assert_export(local_dest, combined(emulators[(B, "eu-west-2")]))
    codes = [(m["role_arn"], m["exit_code"]) for m in manifests(local_dest)]
    assert codes == [(missing, 1), (ROLE_B, 0)]


def test_a_role_that_is_not_an_arn_is_a_usage_error(local_dest):
    result = run_export(["run", "--dest", local_dest.uri, "--role-arn", "appflow-export"])
    assert_exit(result, 2)
    assert "'appflow-export'" in result.stderr
