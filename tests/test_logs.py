"""Logs on stderr: `--log-format json` is one JSON object per line (CloudWatch), text
otherwise; both end with the `run finished` summary; `RUST_LOG` sets the level."""

from __future__ import annotations

import json
import re

from conftest import assert_exit, export, run_args, run_export


def test_json_logs_end_with_the_summary(emulator, local_dest):
    result = export(emulator, local_dest, "--log-format", "json")
    assert_exit(result, 0)
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines, "no log line"
    last = lines[-1]
    assert last["level"] == "INFO" and last["fields"]["message"] == "run finished"
    fields = last["fields"]
    assert fields["exit_code"] == 0 and fields["flows_failed"] == 0
    assert fields["records"] == int(re.search(r"records\s+(\d+) read", result.stdout).group(1))
    assert fields["flows_exported"] == len(emulator.flow_names())
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{8}", fields["run_id"])


def test_json_logs_of_a_failed_run_end_with_the_summary_then_the_error(emulator, local_dest):
    result = export(emulator, local_dest, "--log-format", "json", "--flows", "no-such-flow")
    assert_exit(result, 1)
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    summary, error = lines[-2], lines[-1]
    assert summary["fields"]["message"] == "run finished" and summary["fields"]["exit_code"] == 1
    assert error["level"] == "ERROR" and error["fields"]["exit_code"] == 1
    assert "no-such-flow" in error["fields"]["message"], error


def test_text_logs_end_with_the_summary_and_its_exit_code(emulator, local_dest):
    result = export(emulator, local_dest, "--flows", "no-such-flow")
    assert_exit(result, 1)
    # The logs, then the error itself (`error: ...`), printed by the program at exit.
    logs, error = result.stderr.split("\nerror: ", 1)
    assert "no-such-flow" in error
    last = logs.strip().splitlines()[-1]
    assert "run finished" in last and "exit_code=1" in last and "flows_failed=1" in last, last


def test_rust_log_sets_the_level(emulator, local_dest):
    args, env = run_args(emulator, local_dest)
    quiet = run_export(args, {**env, "RUST_LOG": "error"})
    assert_exit(quiet, 0)
    assert quiet.stderr == ""
    chatty = run_export(args, {**env, "RUST_LOG": "debug"})
    assert_exit(chatty, 0)
    assert " DEBUG " in chatty.stderr and "run finished" in chatty.stderr
