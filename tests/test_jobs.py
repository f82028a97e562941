"""`jobs/`: each recipe parses, fits the AWS API it is for (botocore's official model),
and runs a command the CLI accepts."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import uuid

import boto3
import botocore.session
import pytest
from botocore.validate import validate_parameters

from conftest import EXAMPLES, HISTORY, PLACEHOLDER, REPO, Emulator, accepted, assert_exit, filled, filled_file, run_export

JOBS = REPO / "jobs"
JOB_FILES = sorted(p for p in JOBS.rglob("*") if p.is_file() and p.name != "README.md")


def load(path: Path) -> dict:
    return json.loads(filled(path))


def test_the_placeholders_are_one_list():
    """Every value to replace is an obvious `<PLACEHOLDER>`, listed once in
    jobs/README.md; no example account, region or bucket is left to copy by mistake."""
    used = {m for p in JOB_FILES for m in PLACEHOLDER.findall(p.read_text())}
    listed = set(re.findall(r"^\| `<([A-Z_]+)>` \|", (JOBS / "README.md").read_text(), re.M))
    assert used == listed == set(EXAMPLES), (used, listed)
    for path in JOB_FILES:
        text = path.read_text()
        for example in ("123456789012", "eu-west-1", "us-east-1", "my-data-lake", ":latest"):
            assert example not in text, f"{path}: {example}"


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    """An emulator for the jobs' commands to run against (as dry runs)."""
    emu = Emulator(tmp_path_factory.mktemp("emulator"), **{**HISTORY, "flows": 3, "runs_per_flow": 5})
    yield emu
    emu.stop()


def environment(container: dict) -> dict[str, str]:
    """A container's `environment` as the process gets it."""
    return {e["name"]: e["value"] for e in container.get("environment", [])}


def check_request(service: str, operation: str, path) -> dict:
    request = load(path)
    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    validate_parameters(request, model.input_shape)
    return request


def test_crontab_line(aws, tmp_path):
    lines = [l for l in filled(JOBS / "crontab").splitlines() if l.strip() and not l.startswith("#")]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    for field, (low, high) in zip(fields[:5], [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]):
        assert re.fullmatch(r"\*(/\d+)?|\d+(-\d+)?(,\d+)*", field), field
        assert all(low <= int(n) <= high for n in re.findall(r"\d+", field.split("/")[0])), field
    command = shlex.split(fields[5].split(">>")[0])
    assert command[0].endswith("appflow-export")
    assert accepted(command[1:], aws, tmp_path, config=filled_file(JOBS / "config.toml", tmp_path))["dest"]


def test_ecs_task_definition(aws, tmp_path):
    task = check_request("ecs", "RegisterTaskDefinition", JOBS / "ecs" / "task-definition.json")
    assert task["requiresCompatibilities"] == ["FARGATE"] and task["taskRoleArn"]
    [container] = task["containerDefinitions"]
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    # Configured by its environment: the image bakes no configuration.
    shown = accepted(container["command"], aws, tmp_path, environment(container))
    assert shown["log_format"] == "json" and shown["dest"] == "s3://my-data-lake/appflow-runs"
    # After SIGTERM the flows in flight get --stop-timeout, then what ended is committed:
    # ECS must leave time for that commit before it sends SIGKILL.
    grace = int(shown["stop_timeout"].rstrip("s"))
    assert container["stopTimeout"] >= grace + 15, (container["stopTimeout"], grace)
    assert shown["metrics"] == "emf" and shown["job_name"], shown


ALARMS = sorted((JOBS / "cloudwatch").glob("alarm-*.json"))


@pytest.mark.parametrize("path", ALARMS, ids=[p.stem for p in ALARMS])
def test_cloudwatch_alarm_watches_a_metric_the_job_writes(path, aws, tmp_path):
    """Each alarm fits PutMetricAlarm and watches a metric, with the dimensions, that
    the ECS task's command really prints (its run line)."""
    alarm = check_request("cloudwatch", "PutMetricAlarm", path)
    task = load(JOBS / "ecs" / "task-definition.json")
    [container] = task["containerDefinitions"]
    command = container["command"]
    args = [*command[1:], "--dest", str(tmp_path / "dest")]
    result = run_export([command[0], *args], {**environment(container), "AWS_ENDPOINT_URL_APPFLOW": aws.url,
                                              "AWS_ENDPOINT_URL_STS": aws.url, "TMPDIR": str(tmp_path)})
    assert_exit(result, 0)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    wanted_dims = sorted(d["Name"] for d in alarm["Dimensions"])
    matches = [
        line for line in lines for block in line["_aws"]["CloudWatchMetrics"]
        if block["Namespace"] == alarm["Namespace"]
        and any(sorted(dims) == wanted_dims for dims in block["Dimensions"])
        and alarm["MetricName"] in {m["Name"] for m in block["Metrics"]}
        and all(line.get(d["Name"]) == d["Value"] for d in alarm["Dimensions"])
    ]
    assert len(matches) == 1, (alarm, lines)
    assert alarm["TreatMissingData"] == ("breaching" if alarm["MetricName"] == "RunsSucceeded" else "notBreaching")


def test_batch_alarm_sees_each_shard(aws, tmp_path):
    """The Batch array's alarm watches each shard's RunsSucceeded (a failing or silent
    shard is not hidden by the others), with the dimensions a child's run line has."""
    alarm = check_request("cloudwatch", "PutMetricAlarm", JOBS / "batch" / "alarm-shard-without-success.json")
    definition = load(JOBS / "batch" / "job-definition.json")
    size = load(JOBS / "batch" / "array-job.json")["arrayProperties"]["size"]
    stats = [m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m]
    shards = sorted(dict((d["Name"], d["Value"]) for d in s["Metric"]["Dimensions"])["Shard"] for s in stats)
    assert shards == sorted(f"{i}/{size}" for i in range(size))
    [expression] = [m for m in alarm["Metrics"] if m.get("ReturnData")]
    ids = [m["Id"] for m in alarm["Metrics"] if "MetricStat" in m]
    assert expression["Expression"] == "MIN([" + ", ".join(f"FILL({i}, 0)" for i in ids) + "])"
    assert alarm["TreatMissingData"] == "breaching" and alarm["ComparisonOperator"] == "LessThanThreshold"
    container = definition["containerProperties"]
    env = {**environment(container), "AWS_BATCH_JOB_ARRAY_INDEX": "1", "AWS_BATCH_JOB_ARRAY_SIZE": str(size),
           "AWS_ENDPOINT_URL_APPFLOW": aws.url, "AWS_ENDPOINT_URL_STS": aws.url, "TMPDIR": str(tmp_path)}
    result = run_export([*container["command"], "--dest", str(tmp_path / "dest")], env)
    assert_exit(result, 0)
    [run_line] = [json.loads(l) for l in result.stdout.splitlines() if l.startswith("{") and '"Account"' not in l]
    assert ["JobName", "Shard"] in run_line["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    [one] = [s["Metric"] for s in stats if {"Name": "Shard", "Value": f"1/{size}"} in s["Metric"]["Dimensions"]]
    assert all(run_line[d["Name"]] == d["Value"] for d in one["Dimensions"]) and "RunsSucceeded" in run_line


def test_ecs_one_off_backfill(aws, tmp_path):
    run = check_request("ecs", "RunTask", JOBS / "ecs" / "backfill-task.json")
    task = load(JOBS / "ecs" / "task-definition.json")
    assert run["taskDefinition"] == task["family"]
    [override] = run["overrides"]["containerOverrides"]
    [container] = task["containerDefinitions"]
    assert override["name"] == container["name"]
    command = override["command"]
    assert command[0] == "backfill" and "--since" in command
    # The task's environment (its destination among it) is the run's.
    assert environment(container)["APPFLOW_EXPORT_DEST"] == "s3://my-data-lake/appflow-runs"
    accepted(command, aws, tmp_path, environment(container))


def test_eventbridge_schedule_targets_the_task():
    schedule = check_request("scheduler", "CreateSchedule", JOBS / "eventbridge" / "schedule.json")
    task = load(JOBS / "ecs" / "task-definition.json")
    assert schedule["Target"]["EcsParameters"]["TaskDefinitionArn"].endswith(f"task-definition/{task['family']}")
    assert schedule["ScheduleExpression"].startswith("rate(")


def test_scheduler_policy_lets_the_schedule_start_the_task():
    policy = load(JOBS / "iam-scheduler-policy.json")
    task = load(JOBS / "ecs" / "task-definition.json")
    schedule = load(JOBS / "eventbridge" / "schedule.json")
    grants = {a: s["Resource"] for s in policy["Statement"] for a in s["Action"]}
    assert grants["ecs:RunTask"].startswith(schedule["Target"]["EcsParameters"]["TaskDefinitionArn"] + ":")
    assert set(grants["iam:PassRole"]) == {task["taskRoleArn"], task["executionRoleArn"]}
    conditions = {a: s["Condition"] for s in policy["Statement"] for a in s["Action"]}
    assert conditions["ecs:RunTask"] == {"ArnEquals": {"ecs:cluster": schedule["Target"]["Arn"]}}
    assert conditions["iam:PassRole"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}


def test_batch_array_job_shards_the_flows(aws, tmp_path):
    definition = check_request("batch", "RegisterJobDefinition", JOBS / "batch" / "job-definition.json")
    job = check_request("batch", "SubmitJob", JOBS / "batch" / "array-job.json")
    assert job["jobDefinition"] == definition["jobDefinitionName"]
    assert job["arrayProperties"]["size"] >= 2
    for command in (definition["containerProperties"]["command"], job["containerOverrides"]["command"]):
        batch_child = {"AWS_BATCH_JOB_ARRAY_INDEX": "1", "AWS_BATCH_JOB_ARRAY_SIZE": str(job["arrayProperties"]["size"]),
                       **environment(definition["containerProperties"])}
        shown = accepted(command, aws, tmp_path, batch_child)
        assert shown["shard"] == "auto" and shown["dest"] == "s3://my-data-lake/appflow-runs"


def test_iam_policy_grants_what_the_job_does():
    policy = load(JOBS / "iam-policy.json")
    assert policy["Version"] == "2012-10-17"
    granted = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and statement["Resource"]
        for action in statement["Action"]:
            granted[action] = statement["Resource"]
    assert set(granted) == {"appflow:ListFlows", "appflow:DescribeFlowExecutionRecords", "s3:ListBucket",
                            "s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    assert granted["s3:DeleteObject"].endswith("/_state/runs/*"), "only old run manifests are deleted"
    # The README's permission table names the same actions.
    readme = (REPO / "README.md").read_text()
    assert all(f"`{action}`" in readme for action in granted)


def test_dockerfile(aws, tmp_path):
    """Checked as text and by hadolint: no image can be built here (no daemon, no
    registry), and its build stage's cargo command is not run either (a clean release
    build takes minutes)."""
    text = (REPO / "Dockerfile").read_text()
    instructions = [l.split(None, 1) for l in text.replace("\\\n", " ").splitlines() if l.strip() and not l.startswith("#")]
    stages = [args for op, args in instructions if op == "FROM"]
    assert len(stages) == 2 and " AS build" in stages[0], "multi-stage"
    rust = re.search(r"rust:(\d+)\.(\d+)", stages[0])
    wanted = re.search(r'rust-version = "(\d+)\.(\d+)"', (REPO / "Cargo.toml").read_text())
    assert (int(rust[1]), int(rust[2])) >= (int(wanted[1]), int(wanted[2])), "the build image's Rust is new enough"
    assert any(op == "RUN" and "--release" in args and "--locked" in args for op, args in instructions)
    build = next(args for op, args in instructions if op == "RUN" and "cargo build" in args)
    mounts = [dict(kv.split("=", 1) for kv in m.split(",")) for m in re.findall(r"--mount=(\S+)", build)]
    cached = {m["target"]: m for m in mounts if m.get("type") == "cache"}
    assert set(cached) == {"/usr/local/cargo/registry", "/src/target"}, "crates and compiled dependencies are cached"
    assert all(m.get("sharing") == "locked" for m in cached.values()), "two builds never share a cache at once"
    assert "CARGO_PROFILE_RELEASE_STRIP=debuginfo" in build, "the binary is stripped of its debug information"
    assert not any("--platform" in args for op, args in instructions if op == "FROM"), \
        "the platform is the builder's (docker buildx build --platform linux/arm64)"
    lint = subprocess.run([str(Path(sys.executable).parent / "hadolint"), str(REPO / "Dockerfile")],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    final = instructions[[i for i, (op, _) in enumerate(instructions) if op == "FROM"][1]:]
    assert any(op == "RUN" and "ca-certificates" in args for op, args in final)
    # The staging folder: a volume of the job's user, where TMPDIR points, mounted by
    # the task definitions (read-only root file system).
    [volume] = [json.loads(args) for op, args in final if op == "VOLUME"]
    assert [args for op, args in final if op == "ENV"] == [f"TMPDIR={volume[0]}"]
    assert any(op == "RUN" and f"install -d -o 10001 -g 10001 -m 0700 {volume[0]}" in args for op, args in final)
    for container in (load(JOBS / "ecs" / "task-definition.json")["containerDefinitions"][0],
                      load(JOBS / "batch" / "job-definition.json")["containerProperties"]):
        assert container["readonlyRootFilesystem"] is True
        assert [m["containerPath"] for m in container["mountPoints"]] == volume
        assert environment(container)["TMPDIR"] == volume[0]
    user = [args for op, args in final if op == "USER"]
    assert user and not user[-1].startswith(("root", "0")), "runs as non-root"
    entrypoint = json.loads(next(args for op, args in final if op == "ENTRYPOINT"))
    cmd = json.loads(next(args for op, args in final if op == "CMD"))
    assert entrypoint == ["/usr/local/bin/appflow-export"]
    # No configuration baked in (an example's bucket or region would win over the
    # task's): with nothing set, the run says what is missing.
    assert not [args for op, args in final if op == "COPY" and "jobs/" in args]
    assert cmd == ["run"]
    bare = run_export(cmd)
    assert_exit(bare, 2)
    assert "--dest" in bare.stderr and "APPFLOW_EXPORT_DEST" in bare.stderr
    accepted(cmd, aws, tmp_path, {"APPFLOW_EXPORT_DEST": "s3://my-data-lake/appflow-runs"})
    assert "docker build -t appflow-export ." in (REPO / "README.md").read_text()


def test_the_organization_form_fits_together(moto_server, tmp_path):
    """jobs/organization/: the config (accepted as it is), the member role's policy
    (AppFlow reads only: what the job calls through it), its trust policy (the job's
    task role, with the config's external id), the central job's extra grants
    (ListAccounts, AssumeRole on the config's role name); IAM (moto) takes each
    document as a role's."""
    folder = JOBS / "organization"
    shown = run_export(["config", "--print", "--config", str(filled_file(folder / "config.toml", tmp_path))])
    assert_exit(shown, 0)
    config = tomllib.loads(shown.stdout)
    assert config["organization"] is True and config["role_name"] and config["external_id"]
    member = load(folder / "member-role-policy.json")
    trust = load(folder / "member-trust-policy.json")
    central = load(folder / "central-policy.json")
    actions = lambda doc: {a for s in doc["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions(member) == {"appflow:ListFlows", "appflow:DescribeFlowExecutionRecords"}, "read-only: no S3, no KMS"
    assert actions(central) == {"organizations:ListAccounts", "sts:AssumeRole"}
    [assume] = [s for s in central["Statement"] if s["Action"] == ["sts:AssumeRole"]]
    assert assume["Resource"].endswith(f":role/{config['role_name']}")
    [trusted] = trust["Statement"]
    task = load(JOBS / "ecs" / "task-definition.json")
    # The job's role by its ARN, within its account (the role need not exist when the
    # member role is created, and a role created again under its name still matches).
    assert trusted["Condition"]["ArnEquals"]["aws:PrincipalArn"] == task["taskRoleArn"]
    account = task["taskRoleArn"].split(":")[4]
    assert trusted["Principal"]["AWS"] == f"arn:aws:iam::{account}:root"
    assert trusted["Condition"]["StringEquals"]["aws:PrincipalOrgID"].startswith("o-")
    assert trusted["Condition"]["StringEquals"]["sts:ExternalId"] == config["external_id"]
    iam = boto3.client("iam", endpoint_url=moto_server.url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    name = f"{config['role_name']}-{uuid.uuid4().hex[:6]}"
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName=name, PolicyName="appflow-read", PolicyDocument=json.dumps(member))
    iam.create_policy(PolicyName=f"central-{name}", PolicyDocument=json.dumps(central))
