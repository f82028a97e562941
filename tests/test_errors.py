"""First contact with AWS: each common mistake gives one short line naming the cause
and the fix (which setting, which IAM action), with the SDK's details only at debug
level, and the exit code README documents (1 when AppFlow cannot be listed, 2 for a
bad setting, 3 when the destination cannot be used)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import assert_exit, export, run_args, run_export
from s3_faults import FaultPlan, FaultProxy

# The SDK's debug structures, which must not reach a person's terminal by default.
SDK_NOISE = ("DispatchFailure", "ProviderChainError", "ConnectorError", "ConstructionFailure",
             "CredentialsNotLoaded", "ServiceError {")


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines, result.stderr[-2000:]
    return lines[-1]


def assert_short(result) -> None:
    line = error_line(result)
    assert len(line) < 400, line
    for noise in SDK_NOISE:
        assert noise not in result.stderr, f"{noise} on stderr:\n{result.stderr[-2000:]}"


NO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}


def test_missing_credentials_name_the_settings(emulator, local_dest):
    args, env = run_args(emulator, local_dest, "--max-attempts", "1")
    result = run_export(args, {**env, **NO_CREDENTIALS})
    assert_exit(result, 1)
    assert "no AWS credentials found" in error_line(result)
    assert "AWS_PROFILE" in error_line(result)
    assert_short(result)


def test_missing_credentials_for_an_s3_destination_are_a_destination_error(emulator, make_dest):
    dest = make_dest("s3")
    args, env = run_args(emulator, dest, "--max-attempts", "1")
    result = run_export(args, {**env, **NO_CREDENTIALS})
    assert_exit(result, 3)
    assert "no AWS credentials found" in error_line(result)
    assert_short(result)


@pytest.mark.parametrize("args, env, words", [
    (["--region", ""], {}, "--region"),
    (["--region", "eu_west_1"], {}, "--region"),
    ([], {"AWS_REGION": "bogus"}, "AWS_REGION"),
])
def test_an_invalid_region_is_a_usage_error_naming_it(emulator, local_dest, args, env, words):
    base, base_env = run_args(emulator, local_dest, *args)
    emulator.reset_counters()
    result = run_export(base, {**base_env, **env})
    assert_exit(result, 2)
    assert words in result.stderr and "region" in result.stderr, result.stderr[-2000:]
    assert emulator.api_calls() == 0


def test_an_unreachable_endpoint_names_the_setting(emulator, local_dest):
    result = export(emulator, local_dest, "--appflow-endpoint", "http://127.0.0.1:9", "--max-attempts", "1")
    assert_exit(result, 1)
    line = error_line(result)
    assert "cannot connect to AppFlow" in line and "--appflow-endpoint" in line, line
    assert_short(result)


class _DenyingAppFlow(BaseHTTPRequestHandler):
    """AppFlow answering every call as IAM denies it."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"message": "User is not authorized to perform: appflow:ListFlows"}).encode()
        self.send_response(403)
        self.send_header("x-amzn-ErrorType", "AccessDeniedException")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_access_denied_by_appflow_names_the_iam_action(emulator, local_dest):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DenyingAppFlow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = export(emulator, local_dest, "--appflow-endpoint", url, "--max-attempts", "1")
    finally:
        server.shutdown()
    assert_exit(result, 1)
    line = error_line(result)
    assert "access denied" in line and "appflow:ListFlows" in line, line
    assert_short(result)


def test_access_denied_by_s3_names_the_iam_action(emulator, make_dest, moto_server):
    proxy = FaultProxy(moto_server.url, FaultPlan(deny_methods=("PUT",))).start()
    try:
        dest = make_dest("s3")
        dest.env = {"AWS_ENDPOINT_URL_S3": proxy.url}
        result = export(emulator, dest, "--max-attempts", "1")
    finally:
        proxy.stop()
    assert_exit(result, 3)
    line = error_line(result)
    assert "access denied" in line and "s3:PutObject" in line and dest.bucket in line, line
    assert_short(result)


def test_a_missing_bucket_names_it(emulator, make_dest):
    dest = make_dest("s3")
    dest.client.delete_bucket(Bucket=dest.bucket)
    result = export(emulator, dest)
    assert_exit(result, 3)
    assert f"bucket '{dest.bucket}' does not exist" in error_line(result)
    assert_short(result)
