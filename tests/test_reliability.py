"""No false failures and no silent loss: S3 faults through a fault-injecting proxy in
front of moto, writes that land but lose their response, cut-short reads, objects of a
newer release (version skew), and local files created like any other file (umask).

Every run either exits 0 with exactly the emulator's data, or fails with a clear
destination error; the next run then heals. Nothing here is timed: the slowest run of
each kind is printed (`pytest -s`) for the closing note, never asserted."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import (EXPORT_BIN, assert_exit, assert_export, export, export_env, run_args, run_export,
                      start_export, truth)
from s3_faults import FaultPlan, FaultProxy


@pytest.fixture
def faulty_s3(make_dest, moto_server):
    """Factory: an S3 destination whose exporter talks to moto through a fault proxy
    (the test's own reads and checks go to moto directly)."""
    proxies: list[FaultProxy] = []

    def make(plan: FaultPlan):
        proxy = FaultProxy(moto_server.url, plan).start()
        proxies.append(proxy)
        dest = make_dest("s3")
        dest.env = {"AWS_ENDPOINT_URL_S3": proxy.url}
        return dest, proxy

    yield make
    for proxy in proxies:
        proxy.stop()


def timed_export(emulator, dest, *args):
    started = time.monotonic()
    result = export(emulator, dest, "--max-attempts", "10", *args)
    return result, time.monotonic() - started


@pytest.mark.parametrize("kind", ["internal_error", "slow_down", "reset_before", "reset_after", "delay",
                                  "truncate_body"])
def test_s3_faults_are_retried_and_lose_nothing(emulator, faulty_s3, kind):
    """15% of S3 requests fail one way; with 10 attempts a call, every run exits 0 with
    exactly the emulator's data (ten faults in a row on one call: under 1e-8)."""
    plan = FaultPlan(fraction=0.15, kinds=(kind,), seed=11,
                     delay_seconds=(1.0, 3.0) if kind == "delay" else (0.0, 0.0))
    dest, proxy = faulty_s3(plan)
    slowest = 0.0
    for run in range(2):
        if run:
            emulator.add_runs(2)
        result, seconds = timed_export(emulator, dest)
        slowest = max(slowest, seconds)
        assert_exit(result, 0)
        assert_export(dest, truth(emulator))
    assert proxy.injected.get(kind, 0) > 0, f"no {kind} was injected: the test proves nothing"
    print(f"\n{kind}: 2 runs, 2 exited 0, slowest {slowest:.1f} s, injected {proxy.injected}")


def test_two_writers_under_faults_keep_every_row(emulator, faulty_s3):
    """Two runs at once (the flows split between them, so they share day files), with
    resets after writes land and 500s: real conflicts and own writes mixed."""
    dest, proxy = faulty_s3(FaultPlan(fraction=0.15, kinds=("reset_after", "internal_error"), seed=21))
    names = emulator.flow_names()
    for rerun in range(2):
        if rerun:
            emulator.add_runs(2)
        runs = [start_export(emulator, dest, "--max-attempts", "10", "--flows", ",".join(names[i::2]))
                for i in range(2)]
        for run in runs:
            assert_exit(run.wait(), 0)
        assert_export(dest, truth(emulator))
    assert proxy.injected.get("reset_after", 0) > 0


def test_writes_that_land_but_lose_their_response_are_not_conflicts(emulator, faulty_s3):
    """The first attempt of every write reaches S3, then its connection is reset: the
    SDK retries, the retried conditional put meets the run's own write."""
    dest, proxy = faulty_s3(FaultPlan(first_write_lands_then_reset=True))
    slowest = 0.0
    for run in range(2):  # creates (If-None-Match), then replaces (If-Match)
        if run:
            emulator.add_runs(2)
        started = time.monotonic()
        result = export(emulator, dest)
        slowest = max(slowest, time.monotonic() - started)
        assert_exit(result, 0)
        assert "concurrent writes" not in result.stdout, result.stdout
        assert_export(dest, truth(emulator))
        manifest = max((o for o in dest.objects() if "/_state/runs/" in o["Key"]), key=lambda o: o["Key"])
        body = json.loads(dest.client.get_object(Bucket=dest.bucket, Key=manifest["Key"])["Body"].read())
        assert (body["exit_code"], body["conflicts"]) == (0, 0), body
        assert body["files_written"] > 0, body
    assert proxy.injected.get("reset_after", 0) > 10
    print(f"\nfirst write lands then reset: 2 runs, 2 exited 0, slowest {slowest:.1f} s, injected {proxy.injected}")


def putting_a_day_file(emulator, faulty_s3, tmp_path):
    """A run into S3 with its own TMPDIR, held at its first day file's put (the fault
    proxy forwards none): the destination, the proxy, the run and its TMPDIR."""
    dest, proxy = faulty_s3(FaultPlan(hold_puts="/executions/"))
    staging = tmp_path / "staging"
    staging.mkdir()
    dest.env["TMPDIR"] = str(staging)
    run = start_export(emulator, dest)
    assert proxy.holding.wait(120), "the run never put a day file"
    return dest, proxy, run, staging


def nothing_committed_and_the_next_run_heals(emulator, dest, proxy) -> None:
    """No day file, no state, no manifest reached the bucket; the next run is exact."""
    proxy.release()
    keys = [o["Key"] for o in dest.objects()]
    assert not [k for k in keys if "/executions/" in k or "/_state/" in k], keys
    del dest.env["TMPDIR"]
    assert_exit(export(emulator, dest), 0)
    assert_export(dest, truth(emulator))


def test_a_run_killed_during_a_day_file_put_leaves_the_stored_file_and_the_next_run_heals(
        emulator, faulty_s3, tmp_path):
    """The merged day file is written to a temporary file, then put from disk: a run
    killed (SIGKILL) while its put is in flight leaves the stored day file as it was
    (here: none), no watermark moved, and the next run exports exactly the emulator's data."""
    dest, proxy, run, staging = putting_a_day_file(emulator, faulty_s3, tmp_path)
    # The merged file is on the local disk, complete, while its put is in flight.
    merged = [p for p in staging.rglob("merged-*") if p.stat().st_size > 0]
    assert merged and all(pq.ParquetFile(p).metadata.num_rows > 0 for p in merged), list(staging.rglob("*"))
    run.proc.kill()
    run.wait()
    nothing_committed_and_the_next_run_heals(emulator, dest, proxy)


def test_a_second_signal_during_a_commit_stops_at_once_with_the_first_signal_s_code(emulator, faulty_s3, tmp_path):
    """Every flow read, its day file's put in flight: the first signal (SIGINT) waits
    for the commit; a second one (SIGTERM) stops the run at once, with the exit code
    of the first, as a stopped run has. Nothing is committed, no manifest written (not
    waiting for the destination is the point), and the next run exports exactly."""
    dest, proxy, run, _ = putting_a_day_file(emulator, faulty_s3, tmp_path)
    run.proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert run.proc.poll() is None, "the first signal does not stop a commit"
    started = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    result = run.wait(60)
    assert time.monotonic() - started < 5, "the second signal did not stop the run at once"
    assert_exit(result, 130)
    assert "stopped at once by a second SIGTERM" in result.stderr, result.stderr
    nothing_committed_and_the_next_run_heals(emulator, dest, proxy)


def test_credentials_appear_in_no_output(emulator, faulty_s3):
    dest, _ = faulty_s3(FaultPlan(fraction=0.3, kinds=("internal_error", "reset_before"), seed=5))
    secret, token = "SentinelSecretKey0123456789", "SentinelSessionToken0123456789"
    dest.env.update(AWS_SECRET_ACCESS_KEY=secret, AWS_SESSION_TOKEN=token)
    for args, log in (([], None), (["--max-attempts", "1"], None), (["--log-format", "json"], None),
                      ([], "debug")):
        if log:
            dest.env["RUST_LOG"] = log
        result = export(emulator, dest, *args)
        for value in (secret, token):
            assert value not in result.stdout and value not in result.stderr, args


# ----------------------------------------------------------------------------- S3 options

def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.mark.parametrize("args, sse, key", [
    (["--sse", "AES256"], "AES256", None),
    (["--sse", "aws:kms", "--sse-kms-key-id", KEY_ARN], "aws:kms", KEY_ARN),
    (["--sse", "aws:kms"], "aws:kms", None),
])
def test_server_side_encryption_is_asked_for_on_every_object(emulator, faulty_s3, args, sse, key):
    dest, proxy = faulty_s3(FaultPlan())
    assert_exit(export(emulator, dest, *args), 0)
    puts = [_lower(r.headers) for r in proxy.requests if r.method == "PUT"]
    assert len(puts) > 10
    assert all(p.get("x-amz-server-side-encryption") == sse for p in puts), puts[0]
    assert all(p.get("x-amz-server-side-encryption-aws-kms-key-id") == key for p in puts), puts[0]
    for obj in dest.objects():
        head = dest.client.head_object(Bucket=dest.bucket, Key=obj["Key"])
        assert head.get("ServerSideEncryption") == sse, obj["Key"]
        if key:
            assert head.get("SSEKMSKeyId") == key, obj["Key"]


def test_the_expected_bucket_owner_is_sent_on_every_request(emulator, faulty_s3):
    dest, proxy = faulty_s3(FaultPlan(bucket_owner="123456789012"))
    assert_exit(export(emulator, dest, "--expected-bucket-owner", "123456789012"), 0)
    assert len(proxy.requests) > 10
    sent = [_lower(r.headers).get("x-amz-expected-bucket-owner") for r in proxy.requests]
    assert set(sent) == {"123456789012"}, f"{sent.count(None)} requests without the header"
    assert_export(dest, truth(emulator))


def test_a_bucket_of_another_account_fails_with_a_message_saying_so(emulator, faulty_s3):
    dest, _ = faulty_s3(FaultPlan(bucket_owner="123456789012"))
    result = export(emulator, dest, "--expected-bucket-owner", "111111111111")
    assert_exit(result, 3)
    assert "not owned by account 111111111111" in result.stderr, result.stderr[-2000:]
    assert not dest.objects(), "nothing was written"


@pytest.mark.parametrize("args, words", [
    (["--sse-kms-key-id", KEY_ARN], "--sse-kms-key-id goes with --sse aws:kms"),
    (["--sse", "AES256", "--sse-kms-key-id", KEY_ARN], "--sse-kms-key-id goes with --sse aws:kms"),
    (["--sse", "aes"], "--sse"),
    (["--expected-bucket-owner", "12345"], "not a 12-digit AWS account id"),
])
def test_bad_s3_options_are_usage_errors(emulator, make_dest, args, words):
    dest = make_dest("s3")
    result = export(emulator, dest, *args)
    assert_exit(result, 2)
    assert words in result.stderr, result.stderr[-2000:]


# ----------------------------------------------------------------------------- version skew

FUTURE = "99"


def _future_parquet(path_or_buffer_in, out) -> None:
    """A day file as a newer release would write it: an extra column, schema version 99."""
    table = pq.read_table(path_or_buffer_in)
    table = table.append_column("added_by_a_newer_release", pa.array(["x"] * table.num_rows))
    meta = dict(table.schema.metadata or {})
    meta[b"appflow_export.schema_version"] = FUTURE.encode()
    pq.write_table(table.replace_schema_metadata(meta), out, compression="zstd")


def _local_day_files(root):
    return sorted((root / "executions").glob("dt=*/*.parquet"))


def test_a_day_file_of_a_newer_release_is_left_as_it_is_and_the_other_days_go_on(emulator, local_dest):
    assert_exit(export(emulator, local_dest), 0)
    days = _local_day_files(local_dest.path)
    oldest, newest = days[0], days[-1]
    _future_parquet(oldest, oldest)
    future_bytes, newest_rows = oldest.read_bytes(), pq.read_metadata(newest).num_rows
    state_dir = local_dest.path / "_state" / "flows"
    state_before = {p.name: p.read_bytes() for p in state_dir.glob("*.json")}
    # New runs in the newest day and in the oldest one (the newer release's); a
    # backfill reads both.
    newest_start = max(pq.read_table(newest, columns=["started_at"]).column(0).to_pylist())
    added = emulator.add_runs(1, start=int(newest_start.timestamp() * 1000) + 1)
    oldest_start = pq.read_table(oldest, columns=["started_at"]).column(0).to_pylist()[0]
    emulator.add_runs(1, flows=[added[0][0]], start=int(oldest_start.timestamp() * 1000) + 1)
    args, env = run_args(emulator, local_dest)
    result = run_export(["backfill", *args[1:], "--since", "2020-01-01"], env)
    assert_exit(result, 3)
    for words in (str(oldest), "version 99", "upgrade appflow-export"):
        assert words in result.stderr, result.stderr[-2000:]
    assert oldest.read_bytes() == future_bytes, "the newer release's file was changed"
    assert pq.read_metadata(newest).num_rows > newest_rows, "the other days were not written"
    assert {p.name: p.read_bytes() for p in state_dir.glob("*.json")} == state_before, \
        "a watermark moved although a day was not written"
    manifests = sorted((local_dest.path / "_state" / "runs").glob("*.json"))
    last = json.loads(manifests[-1].read_text())
    assert (last["exit_code"], last["files_written"] >= 1) == (3, True), {k: last[k] for k in ("exit_code", "files_written", "files_unchanged", "errors")}


def test_day_files_another_tool_recompressed_are_merged_or_named(emulator, local_dest):
    """A compaction job may rewrite day files with another codec: snappy (or lz4,
    gzip) is merged as zstd is; a codec this build does not read (brotli) fails that
    day naming the file and the codec, leaves it as it is, and the other days go on."""
    assert_exit(export(emulator, local_dest), 0)
    days = _local_day_files(local_dest.path)
    oldest, newest = days[0], days[-1]
    pq.write_table(pq.read_table(oldest), oldest, compression="brotli")
    pq.write_table(pq.read_table(newest), newest, compression="snappy")
    unreadable = oldest.read_bytes()
    for day in (oldest, newest):
        start = max(pq.read_table(day, columns=["started_at"]).column(0).to_pylist())
        emulator.add_runs(1, start=int(start.timestamp() * 1000) + 1)
    # A backfill reads both days (the oldest is older than an incremental run reads back).
    args, env = run_args(emulator, local_dest)
    result = run_export(["backfill", *args[1:], "--since", "2020-01-01"], env)
    assert_exit(result, 3)
    for words in (str(oldest), "BROTLI", "rewrite it"):
        assert words in result.stderr, result.stderr[-2000:]
    assert "not a readable" not in result.stderr
    assert oldest.read_bytes() == unreadable, "the file was changed"
    assert pq.ParquetFile(newest).metadata.row_group(0).column(0).compression == "ZSTD", "the snappy day was merged"
    # Rewritten with a codec it reads, the day is merged and the export is exact.
    pq.write_table(pq.read_table(oldest), oldest, compression="gzip")
    assert_exit(run_export(["backfill", *args[1:], "--since", "2020-01-01"], env), 0)
    assert_export(local_dest, truth(emulator))


def test_a_state_file_of_a_newer_release_is_left_as_it_is_on_s3(emulator, make_dest):
    dest = make_dest("s3")
    assert_exit(export(emulator, dest), 0)
    key = next(o["Key"] for o in dest.objects() if "/_state/flows/" in o["Key"])
    state = json.loads(dest.client.get_object(Bucket=dest.bucket, Key=key)["Body"].read())
    state["version"] = int(FUTURE)
    state["added_by_a_newer_release"] = {"x": 1}
    future = json.dumps(state).encode()
    dest.client.put_object(Bucket=dest.bucket, Key=key, Body=future)
    emulator.add_runs(1)
    result = export(emulator, dest)
    assert_exit(result, 3)
    for words in (key, "version 99", "upgrade appflow-export"):
        assert words in result.stderr, result.stderr[-2000:]
    assert dest.client.get_object(Bucket=dest.bucket, Key=key)["Body"].read() == future


def test_a_day_file_of_a_newer_release_is_left_as_it_is_on_s3(emulator, make_dest, tmp_path):
    dest = make_dest("s3")
    assert_exit(export(emulator, dest), 0)
    key = sorted(o["Key"] for o in dest.objects() if "/executions/" in o["Key"])[-1]
    local = tmp_path / "day.parquet"
    dest.client.download_file(dest.bucket, key, str(local))
    newest_start = max(pq.read_table(local, columns=["started_at"]).column(0).to_pylist())
    _future_parquet(local, local)
    future = local.read_bytes()
    dest.client.put_object(Bucket=dest.bucket, Key=key, Body=future)
    emulator.add_runs(1, start=int(newest_start.timestamp() * 1000) + 1)  # into that day
    result = export(emulator, dest)
    assert_exit(result, 3)
    for words in (key, "version 99", "upgrade appflow-export"):
        assert words in result.stderr, result.stderr[-2000:]
    assert dest.client.get_object(Bucket=dest.bucket, Key=key)["Body"].read() == future


def test_a_state_file_of_a_newer_release_is_left_as_it_is_locally(emulator, local_dest):
    assert_exit(export(emulator, local_dest), 0)
    path = next((local_dest.path / "_state" / "flows").glob("*.json"))
    state = json.loads(path.read_text())
    state["version"] = int(FUTURE)
    path.write_text(json.dumps(state))
    future = path.read_bytes()
    result = export(emulator, local_dest)
    assert_exit(result, 3)
    for words in (str(path), "version 99", "upgrade appflow-export"):
        assert words in result.stderr, result.stderr[-2000:]
    assert path.read_bytes() == future


@pytest.mark.parametrize("version", ["2.1", "v2", "1", 1.5])
def test_a_state_file_whose_version_is_not_a_whole_number_is_another_release_s(version, emulator, local_dest):
    """Only another release writes a version that is not a whole JSON number (this one
    writes `1`): the run says to upgrade, as for a newer one, and leaves the file as it
    is (not "corrupt")."""
    assert_exit(export(emulator, local_dest), 0)
    path = next((local_dest.path / "_state" / "flows").glob("*.json"))
    state = json.loads(path.read_text())
    state["version"] = version
    path.write_text(json.dumps(state))
    other = path.read_bytes()
    result = export(emulator, local_dest)
    assert_exit(result, 3)
    for words in (str(path), f"version {json.dumps(version)}", "upgrade appflow-export"):
        assert words in result.stderr, result.stderr[-2000:]
    assert "corrupt" not in result.stderr.lower()
    assert path.read_bytes() == other


def test_an_older_day_file_is_still_merged(emulator, local_dest):
    """A file of an older schema (a column missing, version 0) is read with nulls and
    merged; it is then rewritten in the current version."""
    assert_exit(export(emulator, local_dest), 0)
    newest = _local_day_files(local_dest.path)[-1]
    table = pq.read_table(newest)
    older = table.drop_columns(["max_page_size"])
    meta = dict(older.schema.metadata or {})
    meta[b"appflow_export.schema_version"] = b"0"
    pq.write_table(older.replace_schema_metadata(meta), newest, compression="zstd")
    newest_start = max(table.column("started_at").to_pylist())
    emulator.add_runs(1, start=int(newest_start.timestamp() * 1000) + 1)  # in that same day
    assert_exit(export(emulator, local_dest), 0)
    footer = pq.read_metadata(newest).metadata
    assert footer[b"appflow_export.schema_version"] == b"1"


# ----------------------------------------------------------------------------- local files


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_local_files_are_created_like_any_other_file(emulator, local_dest, umask, mode):
    old = os.umask(umask)
    try:
        assert_exit(export(emulator, local_dest), 0)
        emulator.add_runs(2)
        assert_exit(export(emulator, local_dest), 0)  # replaced files keep the mode
    finally:
        os.umask(old)
    files = [p for p in local_dest.path.rglob("*") if p.is_file() and p.name != ".lock"]
    assert files
    modes = {str(p.relative_to(local_dest.path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(mode)}, modes


def test_a_state_field_this_release_does_not_know_is_kept(emulator, local_dest):
    """A newer release may add fields to the state under the same version: this one,
    running beside it, rewrites the state with them as they were (else it would reset
    what the newer one keeps)."""
    assert_exit(export(emulator, local_dest), 0)
    [path] = (local_dest.path / "_state" / "flows").glob("*.json")
    doc = json.loads(path.read_text())
    flow = sorted(doc["flows"])[0]
    doc["flows"][flow]["kept_by_a_newer_release"] = {"n": 3}
    doc["also_at_the_top"] = [1, 2]
    path.write_text(json.dumps(doc))
    emulator.add_runs(2)
    assert_exit(export(emulator, local_dest), 0)
    after = json.loads(path.read_text())
    assert after["flows"][flow]["kept_by_a_newer_release"] == {"n": 3}
    assert after["also_at_the_top"] == [1, 2]
    assert after["flows"][flow]["read_started_ms"] > doc["flows"][flow]["read_started_ms"], "written again"
    assert_export(local_dest, truth(emulator))


def test_temporary_files_stay_out_of_the_tables_and_a_killed_run_s_are_removed(emulator, local_dest):
    """A local destination's temporary files are made in its `_tmp/` (no folder a
    reader globs ever holds one); those a killed run left are removed by a later run
    once a day old, a younger one (a live run's) is left alone."""
    tmp = local_dest.path / "_tmp"
    tmp.mkdir(parents=True)
    abandoned, live = tmp / ".tmp-killed", tmp / ".tmp-live"
    abandoned.write_bytes(b"half a day file")
    live.write_bytes(b"being written")
    two_days_ago = time.time() - 2 * 86_400
    os.utime(abandoned, (two_days_ago, two_days_ago))
    result = export(emulator, local_dest)
    assert_exit(result, 0)
    assert not abandoned.exists() and live.exists()
    assert "removed temporary files a killed run left" in result.stderr
    assert [p.name for p in tmp.iterdir()] == [live.name]
    elsewhere = [p for p in local_dest.path.rglob(".tmp-*") if tmp not in p.parents]
    assert elsewhere == [], elsewhere
    assert_export(local_dest, truth(emulator))


def run_limited(args: list[str], env: dict[str, str], file_size_limit: int) -> subprocess.CompletedProcess:
    """`appflow-export ARGS` with every file it writes limited to `file_size_limit`
    bytes (RLIMIT_FSIZE, SIGXFSZ ignored): a write past it fails with EFBIG, as a full
    disk fails one with ENOSPC, wherever the process writes."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return subprocess.run([str(EXPORT_BIN), *args], env=export_env(env), capture_output=True, text=True,
                          preexec_fn=limit, timeout=300)


@pytest.mark.parametrize("where, limit, history", [
    # A day file bigger than the limit: the merge's temporary file cannot be written.
    ("merging", 64 << 10, {"flows": 20, "runs_per_flow": 600, "days": 3}),
    # More rows than the stage holds in memory (8 MB): its segment cannot be written.
    ("staging", 1 << 20, {"flows": 40, "runs_per_flow": 2500, "days": 60}),
])
def test_a_full_disk_fails_the_run_cleanly_and_the_rerun_is_exact(where, limit, history, start_emulator, local_dest,
                                                                    tmp_path):
    """The temporary folder fills up (a file-size limit stands for a full disk): the run
    fails with exit 4 naming the temporary file and why, leaves nothing partial, and
    the next run, with room, exports exactly."""
    emulator = start_emulator(**history)
    emulator.finish_runs()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    args, env = run_args(emulator, local_dest)
    env = {**env, "TMPDIR": str(scratch)}
    result = run_limited(args, env, limit)
    assert_exit(result, 4)
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "temporary" in error and "File too large" in error, error
    # Nothing partial: no watermark moved, every file written is whole, no temporary
    # file in a table's folder, no staging folder left.
    assert not list((local_dest.path / "_state" / "flows").glob("*.json")), "a watermark moved"
    for path in local_dest.path.rglob("*.parquet"):
        pq.read_table(path)
    assert not [p for p in local_dest.path.rglob(".tmp-*") if local_dest.path / "_tmp" not in p.parents]
    assert not list(scratch.iterdir()), list(scratch.iterdir())
    # With room again, the rerun is exact.
    assert_exit(run_export(args, env), 0)
    assert_export(local_dest, truth(emulator))
