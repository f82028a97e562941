"""The exit codes of `run`, as README.md documents them, in one place: 0 every flow
exported; 1 some flows failed (the others exported, their state advanced); 2 usage or
config error (nothing done, no API call); 3 the destination could not be written; 4 the
local temporary folder could not stage the rows; 5 a bug (a panic, checked by the
pipeline's own tests: nothing in a run can be made to panic from outside)."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, assert_exit, export, run_args, run_export


def test_the_readme_documents_each_code():
    readme = " ".join((REPO / "README.md").read_text().split())  # prose wraps anywhere
    for code, words in [(0, "every flow exported"), (1, "some flows failed"), (2, "usage error"),
                        (3, "the destination could not be read or written"),
                        (4, "the local temporary folder could not stage the rows read"),
                        (5, "an internal error, a bug in appflow-export")]:
        assert f"`{code}` {words}" in readme, code


def test_0_every_flow_exported(emulator, local_dest):
    assert_exit(export(emulator, local_dest), 0)


def test_1_some_flows_failed_and_the_others_advanced(emulator, local_dest):
    names = emulator.flow_names()
    result = export(emulator, local_dest, "--flows", f"{names[0]},{names[1]},no-such-flow")
    assert_exit(result, 1)
    assert "no-such-flow" in result.stderr
    state = json.loads(next((local_dest.path / "_state" / "flows").glob("*.json")).read_text())
    assert set(state["flows"]) == {names[0], names[1]}
    assert all(f["watermark_ms"] for f in state["flows"].values())


@pytest.mark.parametrize("args", [
    ["--dest", "ftp://x/y"],
    ["--concurrency", "0"],
    ["--shard", "3/3"],
    ["--lookback", "soon"],
    ["--role-arn", "not-an-arn"],
    ["--config", "/no/such/file.toml"],
    ["--metrics", "emf", "--job-name", " "],
])
def test_2_usage_errors_do_nothing(emulator, local_dest, args):
    base, env = run_args(emulator, local_dest)
    emulator.reset_counters()
    command = [a for a in base if a not in ("--dest", local_dest.uri)] if "--dest" in args else base
    result = run_export([*command, *args], env)
    assert_exit(result, 2)
    assert emulator.api_calls() == 0
    assert not list(local_dest.path.rglob("*"))


def test_3_the_destination_could_not_be_written(emulator, moto_server):
    result = run_export(["run", "--dest", "s3://no-such-bucket-here/x", "--s3-path-style"],
                        {"AWS_ENDPOINT_URL_APPFLOW": emulator.url, "AWS_ENDPOINT_URL_S3": moto_server.url})
    assert_exit(result, 3)
    assert "no-such-bucket-here" in result.stderr


def test_4_the_staging_folder_could_not_be_made(emulator, local_dest):
    args, env = run_args(emulator, local_dest)
    missing = "/nonexistent/appflow-export-staging"
    result = run_export(args, {**env, "TMPDIR": missing})
    assert_exit(result, 4)
    assert missing in result.stderr
    assert not list(local_dest.path.glob("executions/*/*.parquet")), "nothing committed"
    assert not list(local_dest.path.glob("_state/flows/*.json")), "no watermark moved"
