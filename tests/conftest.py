"""Shared fixtures and helpers of the end-to-end suite.

Everything runs on loopback: the `appflow-emulator` binary serves AppFlow, `moto_server`
serves S3, and the built `appflow-export` binary is run as a user would run it. The
expected data is always computed here from the emulator's ground truth
(`GET /_emulator/flows`), never from the exporter's output; the output is read back
with independent readers (DuckDB, pyarrow, boto3).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.config import Config

REPO = Path(__file__).resolve().parents[1]


def _target_dir() -> Path:
    """Where cargo builds (CARGO_TARGET_DIR, a config's build.target-dir, or target/):
    cargo itself says."""
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return Path(json.loads(out)["target_directory"])


def _binary(env_var: str, name: str) -> Path:
    if env_var in os.environ:
        path = Path(os.environ[env_var])
        return path if path.is_absolute() else REPO / path
    return _target_dir() / "debug" / name


EXPORT_BIN = _binary("APPFLOW_EXPORT_BIN", "appflow-export")
EMULATOR_BIN = _binary("APPFLOW_EMULATOR_BIN", "appflow-emulator")
MOTO_BIN = Path(sys.executable).parent / "moto_server"

# A history small enough for a fast suite but with more than one page (100) per flow,
# a flow stuck InProgress (index 6), a 256-character name (5) and one with `!@#.` (3).
# The account and region differ from the process's AWS_REGION: the export must take
# them from the flow ARNs.
HISTORY = {"flows": 8, "runs_per_flow": 150, "days": 12, "seed": 7,
           "account": "210987654321", "region": "eu-west-2"}
DAY_MS = 86_400_000

# ----------------------------------------------------------------------------- processes

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LISTENING = re.compile(r"(?:listening on|Running on) (http://127\.0\.0\.1:\d+)")


def start_server(cmd: list[str], log: Path, timeout: float = 30) -> tuple[subprocess.Popen, str]:
    """Starts a server that prints its URL (emulator on stdout, moto on stderr)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = _ANSI.sub("", log.read_text(errors="replace"))
        if m := _LISTENING.search(text):
            return proc, m.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}:\n{text}")
        time.sleep(0.05)
    stop_process(proc)
    raise RuntimeError(f"{cmd[0]} printed no URL within {timeout}s:\n{log.read_text(errors='replace')}")


def stop_process(proc: subprocess.Popen) -> None:
    """Stops one process we started, by its pid."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- emulator


class Emulator:
    """A running `appflow-emulator` process and its `/_emulator/` admin API."""

    def __init__(self, log_dir: Path, **opts):
        if not EMULATOR_BIN.exists():
            pytest.fail(f"{EMULATOR_BIN} does not exist: run `make build` (or set APPFLOW_EMULATOR_BIN)")
        args = [str(EMULATOR_BIN), "--port", "0"]
        for key, value in opts.items():
            if value is not None:
                value = json.dumps(value) if key == "faults" else \
                    ",".join(value) if isinstance(value, (list, tuple)) else str(value)
                args += [f"--{key.replace('_', '-')}", value]
        self.proc, self.url = start_server(args, log_dir / f"emulator-{uuid.uuid4().hex[:8]}.log")

    query = ""

    def stop(self) -> None:
        stop_process(self.proc)

    def tenant(self, account: str, region: str) -> "Emulator":
        """The same process's admin API for one of the accounts and regions it serves
        (`account=[..], region=[..]` at start)."""
        view = object.__new__(Emulator)
        view.proc, view.url, view.query = self.proc, self.url, f"?account={account}&region={region}"
        return view

    def _admin(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}/_emulator/{path}{self.query}", data=data, method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)

    def flows(self) -> list[dict]:
        """Ground truth: `[{definition, records}]`, records newest first."""
        return self._admin("GET", "flows")

    def flow_names(self) -> list[str]:
        return [f["definition"]["flowName"] for f in self.flows()]

    def counters(self) -> dict:
        return self._admin("GET", "counters")

    def api_calls(self) -> int:
        """AppFlow API requests received since the last reset, all operations."""
        return sum(op["calls"] for op in self.counters()["operations"].values())

    def reset_counters(self) -> None:
        """Also empties the calls log."""
        self._admin("POST", "counters/reset")

    def calls(self) -> list[dict]:
        """Every AppFlow call since the last reset, in arrival order:
        `{at_ms, operation, in_flight (itself included), throttled}`."""
        return self._admin("GET", "calls")

    def set_faults(self, faults: dict | None = None) -> dict:
        return self._admin("PUT", "faults", faults or {})

    def add_runs(self, count: int, flows: list[str] | None = None, status: str | None = None,
                 start: int | None = None) -> list[tuple[str, str]]:
        body = {"count": count, "flows": flows or [], "status": status, "start": start}
        added = self._admin("POST", "add-runs", {k: v for k, v in body.items() if v is not None})
        return [tuple(pair) for pair in added["added"]]

    def finish_runs(self, flows: list[str] | None = None) -> int:
        return self._admin("POST", "finish-runs", {"flows": flows or []})["finished"]

    def drop_runs(self, before: int, flows: list[str] | None = None) -> int:
        return self._admin("POST", "drop-runs", {"before": before, "flows": flows or []})["dropped"]

    def delete_flows(self, flows: list[str]) -> int:
        return self._admin("POST", "delete-flows", {"flows": flows})["deleted"]

    def recreate_flows(self, flows: list[str]) -> int:
        """Deletes the flows and creates them again under their names: no runs."""
        return self._admin("POST", "recreate-flows", {"flows": flows})["recreated"]

    def set_flow_status(self, flows: list[str], status: str) -> int:
        return self._admin("POST", "set-flow-status", {"flows": flows, "status": status})["updated"]


def _emulators(tmp_path_factory):
    started: list[Emulator] = []

    def start(**opts) -> Emulator:
        emu = Emulator(tmp_path_factory.mktemp("emulator"), **{**HISTORY, **opts})
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def start_emulator(tmp_path_factory):
    """Factory: `start_emulator(flows=.., runs_per_flow=.., faults={..}, ...)`;
    `account=[..], region=[..]` serve several accounts and regions."""
    yield from _emulators(tmp_path_factory)


@pytest.fixture(scope="module")
def start_module_emulator(tmp_path_factory):
    """`start_emulator` for emulators shared by a module's tests."""
    yield from _emulators(tmp_path_factory)


@pytest.fixture
def emulator(start_emulator) -> Emulator:
    """The default history (`HISTORY`) on a fresh emulator."""
    return start_emulator()


# ----------------------------------------------------------------------------- S3 (moto)


@dataclass
class S3Server:
    url: str
    client: object


def s3_client(url: str):
    return boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    proc, url = start_server([str(MOTO_BIN), "-H", "127.0.0.1", "-p", "0"],
                             tmp_path_factory.mktemp("moto") / "moto.log")
    yield S3Server(url, s3_client(url))
    stop_process(proc)


# ----------------------------------------------------------------------------- destinations

STATE_DIR = "_state"


class LocalDest:
    """A local folder destination."""

    kind = "local"

    def __init__(self, path: Path):
        self.path = path
        self.uri = str(path)
        self.args: list[str] = []
        self.env: dict[str, str] = {}

    def local_copy(self) -> Path:
        return self.path

    def snapshot(self) -> dict[str, tuple]:
        """Every data file (not `_state/`) with its content hash, inode and mtime: a
        rewrite, even with the same bytes, changes the inode (rename) or the mtime."""
        snap = {}
        for p in sorted(self.path.rglob("*")):
            rel = p.relative_to(self.path).as_posix()
            if p.is_file() and not rel.startswith(STATE_DIR + "/"):
                st = p.stat()
                snap[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_ino, st.st_mtime_ns)
        return snap


class S3Dest:
    """`s3://bucket/prefix` on moto, a fresh bucket for each destination."""

    kind = "s3"

    def __init__(self, server: S3Server, scratch: Path):
        self.client, self.scratch = server.client, scratch
        self.bucket, self.prefix = f"e2e-{uuid.uuid4().hex[:16]}", "appflow/history"
        self.client.create_bucket(Bucket=self.bucket)
        self.uri = f"s3://{self.bucket}/{self.prefix}"
        self.args = ["--s3-path-style"]
        self.env = {"AWS_ENDPOINT_URL_S3": server.url}

    def objects(self) -> list[dict]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + "/")
        return [obj for page in pages for obj in page.get("Contents", [])]

    def _rel(self, key: str) -> str:
        return key[len(self.prefix) + 1:]

    def snapshot(self) -> dict[str, tuple]:
        """Every data object (not `_state/`) with its ETag and LastModified."""
        return {
            self._rel(o["Key"]): (o["ETag"], o["LastModified"])
            for o in self.objects() if not self._rel(o["Key"]).startswith(STATE_DIR + "/")
        }

    def local_copy(self) -> Path:
        """Downloads the data objects into a new local folder (DuckDB reads it there)."""
        root = Path(tempfile.mkdtemp(dir=self.scratch, prefix="s3copy-"))
        for rel in self.snapshot():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(self.bucket, f"{self.prefix}/{rel}", str(target))
        return root


@pytest.fixture
def make_dest(request, tmp_path):
    """Factory: `make_dest("local" | "s3")`."""

    def make(kind: str):
        if kind == "local":
            return LocalDest(Path(tempfile.mkdtemp(dir=tmp_path, prefix="dest-")))
        return S3Dest(request.getfixturevalue("moto_server"), tmp_path)

    return make


@pytest.fixture(params=["local", "s3"])
def dest(request, make_dest):
    return make_dest(request.param)


@pytest.fixture
def local_dest(make_dest):
    return make_dest("local")


# ----------------------------------------------------------------------------- running the exporter

_NO_AWS_CONFIG = Path(tempfile.gettempdir()) / f"appflow-e2e-{os.getpid()}-no-aws-config" / "none"


def export_env(env_extra: dict[str, str] | None = None) -> dict[str, str]:
    """The process environment: dummy credentials, no profile, no metadata service."""
    # No AWS settings of the caller's, and no RUST_LOG: the binary's default log filter
    # is part of what the tests check (a test that wants another sets it).
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "RUST_LOG"}
    env.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(_NO_AWS_CONFIG), AWS_SHARED_CREDENTIALS_FILE=str(_NO_AWS_CONFIG),
    )
    env.update(env_extra or {})
    return env


class ExportProcess:
    """An `appflow-export` process whose output goes to files (no pipe can fill up)."""

    def __init__(self, args: list[str], env_extra: dict[str, str] | None = None):
        if not EXPORT_BIN.exists():
            pytest.fail(f"{EXPORT_BIN} does not exist: run `make build` (or set APPFLOW_EXPORT_BIN)")
        self.args = [str(EXPORT_BIN), *args]
        out_dir = Path(tempfile.mkdtemp(prefix="appflow-export-run-"))
        self._out, self._err = out_dir / "stdout", out_dir / "stderr"
        with open(self._out, "wb") as out, open(self._err, "wb") as err:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=export_env(env_extra))

    def wait(self, timeout: float = 300) -> subprocess.CompletedProcess:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
            pytest.fail(f"{' '.join(self.args)} did not finish within {timeout}s;\n"
                        f"stderr: {self._err.read_text(errors='replace')[-4000:]}")
        result = subprocess.CompletedProcess(self.args, self.proc.returncode,
                                             self._out.read_text(errors="replace"),
                                             self._err.read_text(errors="replace"))
        shutil.rmtree(self._out.parent, ignore_errors=True)
        return result


def run_export(args: list[str], env_extra: dict[str, str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs `appflow-export ARGS` to completion."""
    return ExportProcess(args, env_extra).wait(timeout)


def run_args(emulator: Emulator, dest, *args: str) -> tuple[list[str], dict[str, str]]:
    """`run --dest DEST ...` and the environment pointing at this emulator and dest."""
    return ["run", "--dest", dest.uri, *dest.args, *args], {
        "AWS_ENDPOINT_URL_APPFLOW": emulator.url, "AWS_ENDPOINT_URL_STS": emulator.url, **dest.env}


def export(emulator: Emulator, dest, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`appflow-export run` from `emulator` into `dest`."""
    return run_export(*run_args(emulator, dest, *args), timeout=timeout)


def start_export(emulator: Emulator, dest, *args: str) -> ExportProcess:
    return ExportProcess(*run_args(emulator, dest, *args))


# The value each placeholder of jobs/ takes in these tests (jobs/README.md lists them).
EXAMPLES = {
    "ACCOUNT_ID": "123456789012", "REGION": "eu-west-1", "SECOND_REGION": "us-east-1", "BUCKET": "my-data-lake",
    "TAG": "v1", "SUBNET_ID": "subnet-0123456789abcdef0", "SECURITY_GROUP_ID": "sg-0123456789abcdef0",
    "ALARM_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:data-platform-alerts",
    "KMS_KEY_ARN": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "ORGANIZATION_ID": "o-exampleorgid", "EXTERNAL_ID": "appflow-export",
}
# `<NAME>`, but not the `APPFLOW_EXPORT_<KEY>` of the docs.
PLACEHOLDER = re.compile(r"(?<![A-Z_])<([A-Z][A-Z_]*)>")


def fill_in(text: str, values: dict[str, str]) -> str:
    """`text` with each `<NAME>` that `values` names replaced by its value."""
    return PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), text)


def filled(path: Path) -> str:
    """A jobs/ file as a team deploys it: each placeholder replaced by its example."""
    return PLACEHOLDER.sub(lambda m: EXAMPLES[m[1]], path.read_text())


def filled_file(path: Path, tmp_path: Path) -> Path:
    copy = tmp_path / f"filled-{path.name}"
    copy.write_text(filled(path))
    return copy


def accepted(command: list[str], aws, tmp_path, env: dict | None = None, config: Path | None = None) -> dict:
    """`command` (the arguments after the program), in the environment `env` (a
    container's), is a run or backfill the CLI accepts: run as a dry run against the
    emulator, with the destination swapped for a local folder (a flag, which wins over
    the environment); returns a run's effective options (`config --print`). A host's
    config path (`/etc/appflow-export/config.toml`) is `config`."""
    assert command[0] in ("run", "backfill"), command
    args = [str(config) if a == "/etc/appflow-export/config.toml" else a for a in command[1:]]
    options = {}
    if command[0] == "run":
        shown = run_export(["config", "--print", *args], env)
        assert_exit(shown, 0)
        options = tomllib.loads(shown.stdout)
    local = str(tmp_path / "dest")
    if "--dest" in args:
        args[args.index("--dest") + 1] = local
    else:
        args += ["--dest", local]
    dry = run_export([command[0], *args, "--dry-run"], {"AWS_ENDPOINT_URL_APPFLOW": aws.url, **(env or {})})
    assert_exit(dry, 0)
    assert dry.stdout.startswith("dry run: would export ")
    return options


def assert_exit(result: subprocess.CompletedProcess, code: int) -> None:
    assert result.returncode == code, (
        f"exit code {result.returncode}, expected {code}: {' '.join(result.args[1:])}\n"
        f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )


# ----------------------------------------------------------------------------- the data contract

EXECUTION_COLUMNS = [
    "account_id", "region", "flow_name", "flow_arn", "execution_id", "execution_status",
    "started_at", "last_updated_at", "data_pull_start_time", "data_pull_end_time",
    "bytes_processed", "bytes_written", "records_processed", "num_parallel_processes",
    "max_page_size", "put_failures_count", "execution_message", "duration_seconds",
    "catalog_registration_count", "exported_at",
]
CATALOG_COLUMNS = [
    "account_id", "region", "flow_name", "execution_id", "started_at", "ordinal",
    "catalog_type", "table_name",
    "table_registration_status", "table_registration_message", "table_registration_result",
    "partition_registration_status", "partition_registration_message", "partition_registration_result",
]
TIMESTAMP_COLUMNS = {"started_at", "last_updated_at", "data_pull_start_time", "data_pull_end_time", "exported_at"}
INT64_COLUMNS = {"bytes_processed", "bytes_written", "records_processed", "num_parallel_processes",
                 "max_page_size", "put_failures_count"}
OPEN_STATUSES = {"InProgress", "CancelStarted"}
# Table -> (folder under <dest>, columns, key columns).
TABLES = {
    "executions": ("executions", EXECUTION_COLUMNS, ("flow_name", "execution_id")),
    "catalog": ("catalog_registrations", CATALOG_COLUMNS, ("flow_name", "execution_id", "ordinal")),
}


def now_ms() -> int:
    return int(time.time() * 1000)


def ms(seconds: float | None) -> int | None:
    """An API timestamp (epoch seconds with 3 decimals) as integer milliseconds."""
    return None if seconds is None else round(seconds * 1000)


def utc_day(millis: int) -> str:
    return dt.datetime.fromtimestamp(millis / 1000, dt.timezone.utc).strftime("%Y-%m-%d")


@dataclass
class Dataset:
    """Rows of both tables keyed by `TABLES[...][2]`: expected (from the ground truth)
    or actual (read from the export)."""

    executions: dict[tuple, dict] = field(default_factory=dict)
    catalog: dict[tuple, dict] = field(default_factory=dict)
    duplicates: dict[str, list] = field(default_factory=lambda: {"executions": [], "catalog": []})

    def add(self, table: str, row: dict) -> None:
        rows = getattr(self, table)
        key = tuple(row[c] for c in TABLES[table][2])
        if key in rows:
            self.duplicates[table].append(key)
        rows[key] = row

    def select(self, keep) -> Dataset:
        """The rows whose flow name satisfies `keep(name)`."""
        return Dataset({k: r for k, r in self.executions.items() if keep(k[0])},
                       {k: r for k, r in self.catalog.items() if keep(k[0])})

    def select_rows(self, keep) -> Dataset:
        """The rows (of both tables) for which `keep(row)` holds."""
        return Dataset({k: r for k, r in self.executions.items() if keep(r)},
                       {k: r for k, r in self.catalog.items() if keep(r)})

    def only(self, *flows: str) -> Dataset:
        return self.select(lambda name: name in flows)

    def without(self, *flows: str) -> Dataset:
        return self.select(lambda name: name not in flows)

    def merged_over(self, older: Dataset) -> Dataset:
        """What an export holds after exporting `older` and then `self`: runs the API
        still returns take their new version, runs it forgot keep their old one."""
        fresh = set(self.executions)
        catalog = {k: r for k, r in older.catalog.items() if k[:2] not in fresh}
        return Dataset({**older.executions, **self.executions}, {**catalog, **self.catalog})


def _arn_account_region(arn: str) -> tuple[str, str]:
    _arn, _aws, _service, region, account, _resource = arn.split(":", 5)
    return account, region


def truth(emulator: Emulator) -> Dataset:
    """The rows the export must hold, computed from the emulator's ground truth."""
    data = Dataset()
    for flow in emulator.flows():
        definition = flow["definition"]
        name, arn = definition["flowName"], definition["flowArn"]
        account, region = _arn_account_region(arn)
        for rec in flow["records"]:
            result = rec.get("executionResult") or {}
            error = result.get("errorInfo") or {}
            started, updated = ms(rec["startedAt"]), ms(rec.get("lastUpdatedAt"))
            status = rec.get("executionStatus")
            finished = status not in OPEN_STATUSES and updated is not None
            details = rec.get("metadataCatalogDetails") or []
            common = {"account_id": account, "region": region, "flow_name": name,
                      "execution_id": rec["executionId"], "started_at": started, "dt": utc_day(started)}
            data.add("executions", {
                **common, "flow_arn": arn, "execution_status": status, "last_updated_at": updated,
                "data_pull_start_time": ms(rec.get("dataPullStartTime")),
                "data_pull_end_time": ms(rec.get("dataPullEndTime")),
                "bytes_processed": result.get("bytesProcessed"),
                "bytes_written": result.get("bytesWritten"),
                "records_processed": result.get("recordsProcessed"),
                "num_parallel_processes": result.get("numParallelProcesses"),
                "max_page_size": result.get("maxPageSize"),
                "put_failures_count": error.get("putFailuresCount"),
                "execution_message": error.get("executionMessage"),
                "duration_seconds": (updated - started) / 1000 if finished else None,
                "catalog_registration_count": len(details),
            })
            for ordinal, detail in enumerate(details):
                table = detail.get("tableRegistrationOutput") or {}
                partition = detail.get("partitionRegistrationOutput") or {}
                data.add("catalog", {
                    **common, "ordinal": ordinal,
                    "catalog_type": detail.get("catalogType"), "table_name": detail.get("tableName"),
                    **{f"table_registration_{k}": table.get(k) for k in ("status", "message", "result")},
                    **{f"partition_registration_{k}": partition.get(k) for k in ("status", "message", "result")},
                })
    return data


def truth_of(emulator: Emulator, places) -> Dataset:
    """The rows of several (account, region) of one emulator serving them all."""
    data = Dataset()
    for account, region in places:
        part = truth(emulator.tenant(account, region))
        data.executions.update(part.executions)
        data.catalog.update(part.catalog)
    return data


def flow_truth(emulator: Emulator) -> dict[tuple, dict]:
    """The `flows` rows a snapshot taken now must hold, keyed by (account, region,
    name), from the emulator's definitions; the last-run columns from each flow's
    newest run, as `lastRunExecutionDetails` describes it."""
    rows = {}
    for flow in emulator.flows():
        d = flow["definition"]
        account, region = _arn_account_region(d["flowArn"])
        newest = flow["records"][0] if flow["records"] else None
        error = ((newest or {}).get("executionResult") or {}).get("errorInfo") or {}
        rows[(account, region, d["flowName"])] = {
            "account_id": account, "region": region, "flow_name": d["flowName"], "flow_arn": d["flowArn"],
            "description": d.get("description"), "flow_status": d.get("flowStatus"),
            "source_connector_type": d.get("sourceConnectorType"),
            "source_connector_label": d.get("sourceConnectorLabel"),
            "destination_connector_type": d.get("destinationConnectorType"),
            "destination_connector_label": d.get("destinationConnectorLabel"),
            "trigger_type": d.get("triggerType"),
            "created_at": ms(d.get("createdAt")), "created_by": d.get("createdBy"),
            "last_updated_at": ms(d.get("lastUpdatedAt")), "last_updated_by": d.get("lastUpdatedBy"),
            "tags": dict(sorted((d.get("tags") or {}).items())),
            "last_run_status": newest and newest.get("executionStatus"),
            "last_run_at": newest and ms(newest.get("lastUpdatedAt") or newest["startedAt"]),
            "last_run_message": error.get("executionMessage"),
            # A flow whose every run aged out keeps the details of its last one.
            **({} if newest or not d.get("lastRunExecutionDetails") else {
                "last_run_status": d["lastRunExecutionDetails"].get("mostRecentExecutionStatus"),
                "last_run_at": ms(d["lastRunExecutionDetails"].get("mostRecentExecutionTime")),
                "last_run_message": d["lastRunExecutionDetails"].get("mostRecentExecutionMessage"),
            }),
            "deleted_at": None,
        }
    return rows


# ----------------------------------------------------------------------------- reading the export


def duckdb_table(root: Path, table: str) -> str:
    """The `read_parquet(...)` a user would write for one table of a local export."""
    folder = TABLES[table][0]
    return f"read_parquet('{root}/{folder}/*/*.parquet', hive_partitioning=true, union_by_name=true)"


def query(root: Path, sql: str) -> list[tuple]:
    """Runs `sql` where `{executions}` and `{catalog}` stand for the two tables."""
    with duckdb.connect() as con:
        return con.execute(sql.format(**{t: duckdb_table(root, t) for t in TABLES})).fetchall()


def read_output(root: Path) -> Dataset:
    """Both tables of a local export, read with DuckDB; timestamps as epoch ms, `dt` as
    text."""
    data = Dataset()
    with duckdb.connect() as con:
        for table, (folder, _columns, _key) in TABLES.items():
            if not list(root.glob(f"{folder}/*/*.parquet")):
                continue
            source = duckdb_table(root, table)
            described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
            replace = [f"epoch_ms({name}) AS {name}" for name, kind, *_ in described if kind.startswith("TIMESTAMP")]
            replace.append("CAST(dt AS VARCHAR) AS dt")
            cursor = con.execute(f"SELECT * REPLACE ({', '.join(replace)}) FROM {source}")
            names = [d[0] for d in cursor.description]
            for values in cursor.fetchall():
                data.add(table, dict(zip(names, values)))
    return data


FLOW_COLUMNS = [
    "account_id", "region", "flow_name", "flow_arn", "description", "flow_status",
    "source_connector_type", "source_connector_label", "destination_connector_type",
    "destination_connector_label", "trigger_type", "created_at", "created_by", "last_updated_at",
    "last_updated_by", "tags", "last_run_status", "last_run_at", "last_run_message",
    "snapshot_at", "deleted_at",
]


def read_flows(root: Path) -> dict[tuple, dict]:
    """The `flows` table of a local export, read with pyarrow: rows keyed by
    (account, region, name), timestamps as epoch ms, tags as a dict."""
    rows = {}
    for path in sorted(root.glob("flows/*.parquet")):
        table = pq.read_table(path)
        assert table.column_names == FLOW_COLUMNS, f"{path}: columns {table.column_names}"
        for row in table.to_pylist():
            for col in ("created_at", "last_updated_at", "last_run_at", "snapshot_at", "deleted_at"):
                if row[col] is not None:
                    row[col] = round(row[col].timestamp() * 1000)
            row["tags"] = dict(row["tags"] or [])
            key = (row["account_id"], row["region"], row["flow_name"])
            assert key not in rows, f"{path}: flow {key} twice"
            rows[key] = row
    return rows


def _same(got, want) -> bool:
    if isinstance(want, float) and isinstance(got, (int, float)):
        return math.isclose(got, want, rel_tol=0, abs_tol=1e-6)
    return got == want


def _examples(items, n: int = 5) -> str:
    items = sorted(items, key=repr)
    return ", ".join(repr(i) for i in items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def assert_same(actual: Dataset, expected: Dataset) -> None:
    """Same keys, no duplicate, and every expected column equal (`exported_at` is not
    expected: it is when the export ran)."""
    problems = []
    for table in TABLES:
        got, want = getattr(actual, table), getattr(expected, table)
        if dup := actual.duplicates[table]:
            problems.append(f"{table}: {len(dup)} duplicate rows: {_examples(dup)}")
        if missing := want.keys() - got.keys():
            problems.append(f"{table}: {len(missing)} rows missing: {_examples(missing)}")
        if extra := got.keys() - want.keys():
            problems.append(f"{table}: {len(extra)} unexpected rows: {_examples(extra)}")
        diffs = [
            f"{key} {col}: got {got[key].get(col, '<no column>')!r}, want {value!r}"
            for key in want.keys() & got.keys()
            for col, value in want[key].items()
            if not _same(got[key].get(col, "<no column>"), value)
        ]
        if diffs:
            problems.append(f"{table}: {len(diffs)} wrong values: " + "; ".join(sorted(diffs)[:8]))
    assert not problems, "the export differs from the emulator's ground truth:\n" + "\n".join(problems)


def _parquet_files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for folder, *_ in TABLES.values() if (root / folder).exists()
        for p in (root / folder).rglob("*") if p.is_file()
    }


def _check_file(path: Path, table: str, day: str, account: str, region: str) -> None:
    columns = TABLES[table][1]
    pf = pq.ParquetFile(path)
    assert pf.schema_arrow.names == columns, f"{path}: columns {pf.schema_arrow.names}, expected {columns}"
    for i, name in enumerate(pf.schema.names):
        col, arrow_type = pf.schema.column(i), pf.schema_arrow.field(name).type
        if name in TIMESTAMP_COLUMNS:
            logical = json.loads(col.logical_type.to_json())
            assert (col.physical_type, logical.get("Type"), logical.get("isAdjustedToUTC"), logical.get("timeUnit")) \
                == ("INT64", "Timestamp", True, "milliseconds"), \
                f"{path}: {name} is {col.physical_type} {col.logical_type}, expected INT64 TIMESTAMP(MILLIS, UTC)"
        elif name in INT64_COLUMNS:
            assert arrow_type == pa.int64(), f"{path}: {name} is {arrow_type}, expected int64"
        elif name == "duration_seconds":
            assert arrow_type == pa.float64(), f"{path}: {name} is {arrow_type}, expected double"
    rows = pf.read(columns=["account_id", "region", "flow_name", "started_at"]).to_pylist()
    if not rows and table == "catalog":
        return  # a day none of whose runs registered anything in a catalog
    assert {(r["account_id"], r["region"]) for r in rows} == {(account, region)}, \
        f"{path}: rows of other accounts/regions"
    days = {r["started_at"].astimezone(dt.timezone.utc).strftime("%Y-%m-%d") for r in rows}
    assert days == {day}, f"{path}: rows started on {sorted(days)}, the file is dt={day}"
    order = [(r["flow_name"], r["started_at"]) for r in rows]
    unsorted = next((i for i in range(len(order) - 1) if order[i] > order[i + 1]), None)
    assert unsorted is None, (f"{path}: rows not sorted by flow_name, started_at: row {unsorted} "
                              f"{order[unsorted]} comes before {order[unsorted + 1]}")


def assert_layout(root: Path, expected: Dataset) -> None:
    """Exactly one file per (account, region, day) with runs per table (a day's catalog
    file has no rows when none of its runs registered anything), nothing else beside
    them; every file with the contract's columns and types, its rows of that day, sorted."""
    want = {}
    for row in expected.executions.values():
        for table, (folder, _columns, _key) in TABLES.items():
            rel = f"{folder}/dt={row['dt']}/{row['account_id']}_{row['region']}.parquet"
            want[rel] = (table, row["dt"], row["account_id"], row["region"])
    files = _parquet_files(root)
    assert files == set(want), (
        f"data files differ from one per (account, region, day) and table:\n"
        f"missing: {_examples(set(want) - files)}\nunexpected: {_examples(files - set(want))}"
    )
    for rel, (table, day, account, region) in want.items():
        _check_file(root / rel, table, day, account, region)


def assert_sums(root: Path, expected: Dataset) -> None:
    """What a user's first DuckDB queries return: counts and byte/record sums."""
    def total(col):
        return sum(r[col] or 0 for r in expected.executions.values())

    got = query(root, "SELECT count(*), count(DISTINCT (flow_name, execution_id)), sum(bytes_processed), "
                      "sum(bytes_written), sum(records_processed) FROM {executions}")[0]
    n = len(expected.executions)
    assert tuple(int(v or 0) for v in got) == (n, n, total("bytes_processed"), total("bytes_written"),
                                              total("records_processed")), "executions: counts or sums differ"
    if expected.catalog:
        assert query(root, "SELECT count(*) FROM {catalog}")[0][0] == len(expected.catalog), "catalog row count"


def assert_export(dest, expected: Dataset) -> Dataset:
    """The export in `dest` holds exactly `expected`, laid out as the contract says.
    Returns what was read (e.g. for `exported_at`)."""
    root = dest.local_copy()
    assert_layout(root, expected)
    actual = read_output(root)
    assert_same(actual, expected)
    assert_sums(root, expected)
    return actual
