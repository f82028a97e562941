"""deploy/: the CloudFormation templates pass cfn-lint and deploy on moto, the requests
deploy/README.md runs fit AWS's API (botocore's model), and what they create is what
the job needs: no more.

moto plays CloudFormation (StackSets included), Organizations, IAM and STS. It grants
every AssumeRole and evaluates no policy condition: the trust's conditions are checked
as written, not enforced."""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
import duckdb
import sqlglot
import botocore.session
import pytest
from botocore.validate import validate_parameters

from s3_faults import FaultProxy
from conftest import REPO, accepted, fill_in, assert_exit, export, run_export, start_server, stop_process

DEPLOY = REPO / "deploy"
TEMPLATES = sorted((DEPLOY / "cloudformation").glob("*.yaml"))
MEMBER_POLICY = REPO / "jobs" / "organization" / "member-role-policy.json"
MEMBER_TRUST = REPO / "jobs" / "organization" / "member-trust-policy.json"
CENTRAL_ROLE = "arn:aws:iam::123456789012:role/appflow-export"  # moto's account for the key "testing"


def request(path: Path, service: str, operation: str, values: dict[str, str]) -> dict:
    """A `--cli-input-json` file with its `<PLACEHOLDERS>` filled in, checked against
    botocore's model of `operation`."""
    text = fill_in(path.read_text(), values)
    assert "<" not in text, f"{path}: a placeholder is left: {text}"
    req = json.loads(text)
    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    validate_parameters(req, model.input_shape)
    return req


def test_there_are_templates():
    assert TEMPLATES, "deploy/cloudformation/ has no template"


@pytest.mark.parametrize("template", TEMPLATES, ids=[t.stem for t in TEMPLATES])
def test_template_passes_cfn_lint(template):
    lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(lint), str(template)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """A moto server of this module's own: an organization is global to a server."""
    proc, url = start_server([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", "0"],
                             tmp_path_factory.mktemp("moto-deploy") / "moto.log")
    yield url
    stop_process(proc)


def client(moto: str, service: str, credentials: dict | None = None):
    keys = credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return boto3.client(service, endpoint_url=moto, region_name="eu-west-1", **keys)


def test_the_member_role_stack_set_gives_every_member_account_a_read_only_role(moto, emulator, local_dest):
    org = client(moto, "organizations")
    org_id = org.create_organization(FeatureSet="ALL")["Organization"]["Id"]
    root = org.list_roots()["Roots"][0]["Id"]
    member = org.create_account(Email="member@example.com", AccountName="member")["CreateAccountStatus"]["AccountId"]
    values = {"CENTRAL_TASK_ROLE_ARN": CENTRAL_ROLE, "EXTERNAL_ID": "appflow-export", "ORGANIZATION_ID": org_id,
              "ROOT_OR_OU_ID": root, "REGION": "eu-west-1"}
    cfn = client(moto, "cloudformation")
    stack_set = request(DEPLOY / "stackset" / "member-role-stack-set.json", "cloudformation", "CreateStackSet", values)
    # What moto does not act on, checked as asked for: every account of the targets,
    # also those that join later, and a role with a name of its own.
    assert stack_set["PermissionModel"] == "SERVICE_MANAGED"
    assert stack_set["AutoDeployment"] == {"Enabled": True, "RetainStacksOnAccountRemoval": False}
    assert stack_set["Capabilities"] == ["CAPABILITY_NAMED_IAM"]
    template = (DEPLOY / "cloudformation" / "member-role.yaml").read_text()
    # The values fit the template's patterns (CloudFormation matches them whole).
    patterns = dict(re.findall(r"\n  (\w+):\n(?:    .*\n)*?    AllowedPattern: \"(.*)\"", template))
    assert set(patterns) == {"RoleName", "CentralRoleArn", "ExternalId", "OrganizationId"}, patterns
    for p in stack_set["Parameters"]:
        pattern = patterns[p["ParameterKey"]].replace("\\\\", "\\")
        assert re.fullmatch(pattern, p["ParameterValue"]), (p, pattern)
    cfn.create_stack_set(**stack_set, TemplateBody=template)
    instances = request(DEPLOY / "stackset" / "member-role-instances.json", "cloudformation", "CreateStackInstances",
                        values)
    cfn.create_stack_instances(**instances)
    summaries = cfn.list_stack_instances(StackSetName=stack_set["StackSetName"])["Summaries"]
    assert member in {s["Account"] for s in summaries}, summaries
    assert all(s["StackInstanceStatus"]["DetailedStatus"] == "SUCCEEDED" for s in summaries), summaries

    # In the member account (moto's credentials for a role of that account act in it).
    assumed = client(moto, "sts").assume_role(RoleArn=f"arn:aws:iam::{member}:role/OrganizationAccountAccessRole",
                                              RoleSessionName="check")["Credentials"]
    iam = client(moto, "iam", {"aws_access_key_id": assumed["AccessKeyId"],
                               "aws_secret_access_key": assumed["SecretAccessKey"],
                               "aws_session_token": assumed["SessionToken"]})
    name = dict((p["ParameterKey"], p["ParameterValue"]) for p in stack_set["Parameters"])["RoleName"]
    role = iam.get_role(RoleName=name)["Role"]
    assert role["Arn"] == f"arn:aws:iam::{member}:role/{name}"
    # The trust of jobs/organization/, with this organization's id: the central role
    # by its ARN within its account, the external id, inside the organization.
    trust = fill(MEMBER_TRUST, ORGANIZATION_ID=org_id, ACCOUNT_ID="123456789012", EXTERNAL_ID="appflow-export")
    assert role["AssumeRolePolicyDocument"] == trust, "the template and jobs/organization/ differ"
    [trusted] = trust["Statement"]
    assert trusted["Condition"]["ArnEquals"] == {"aws:PrincipalArn": CENTRAL_ROLE}
    policies = iam.list_role_policies(RoleName=name)["PolicyNames"]
    assert iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"] == []
    [policy] = [iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"] for p in policies]
    # moto keeps an inline policy that CloudFormation created as Python's text of it.
    policy = ast.literal_eval(policy) if isinstance(policy, str) else policy
    assert policy == json.loads(MEMBER_POLICY.read_text()), "the template and jobs/organization/ differ"

    # Exactly the AppFlow operations an export calls: nothing it does not use.
    assert_exit(export(emulator, local_dest), 0)
    called = {f"appflow:{c['operation']}" for c in emulator.calls()}
    granted = {a for s in policy["Statement"] for a in s["Action"]}
    assert granted == called, (granted, called)


# ----------------------------------------------------------------------------- the central stack

CENTRAL = DEPLOY / "cloudformation" / "appflow-export.yaml"
JOBS = REPO / "jobs"
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/appflow-export:v1"
KMS_KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# What moto's CloudFormation does not create (the stack completes without them):
# cfn-lint checks them, nothing here runs them.
MOTO_LACKS = {"AWS::S3::BucketPolicy", "AWS::Scheduler::Schedule", "AWS::CloudWatch::Alarm", "AWS::Glue::Database",
              "AWS::Glue::Table", "AWS::Athena::WorkGroup", "AWS::SNS::Subscription"}


def template() -> dict:
    """The central template as CloudFormation reads it (short forms as `Fn::`)."""
    from cfnlint.decode import cfn_yaml
    return cfn_yaml.loads(CENTRAL.read_text())


def deploy(moto: str, name: str, **parameters: str) -> dict:
    """Creates the central stack `name` on moto; returns its outputs."""
    cfn = client(moto, "cloudformation")
    values = {"ImageUri": IMAGE, "Subnets": "subnet-0123456789abcdef0", "SecurityGroups": "sg-0123456789abcdef0",
              **parameters}
    cfn.create_stack(StackName=name, TemplateBody=CENTRAL.read_text(), Capabilities=["CAPABILITY_NAMED_IAM"],
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()])
    stack = cfn.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1}) or \
        cfn.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def role_policy(moto: str, role: str) -> dict:
    iam = client(moto, "iam")
    [name] = iam.list_role_policies(RoleName=role)["PolicyNames"]
    policy = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    # moto keeps CloudFormation's inline policy as Python's text of it, and a statement
    # left out by `!Ref AWS::NoValue` as None.
    policy = ast.literal_eval(policy) if isinstance(policy, str) else policy
    return {**policy, "Statement": [s for s in policy["Statement"] if s is not None]}


@pytest.fixture(scope="module")
def central(moto) -> dict:
    """The central stack with its defaults (this account, SSE-S3) and an alarm email."""
    return deploy(moto, "appflow-export", AlarmEmail="data-platform@example.com")


def test_the_central_stack_creates_what_moto_can(moto, central, tmp_path, emulator):
    resources = client(moto, "cloudformation").list_stack_resources(StackName="appflow-export")["StackResourceSummaries"]
    types = {r["ResourceType"] for r in resources}
    declared = {r["Type"] for r in template()["Resources"].values()}
    assert declared - types == MOTO_LACKS, "moto's reach changed: check the new types here"

    bucket = central["BucketName"]
    s3 = client(moto, "s3")
    # moto's CloudFormation keeps a bucket's encryption only: the rest is checked as
    # CloudFormation reads the template (cfn-lint checks it against the resource's schema).
    props = template()["Resources"]["ExportBucket"]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    assert all(r["Status"] == "Enabled" for r in rules.values())
    versions = rules["expire-noncurrent-versions"]
    assert "Prefix" not in versions and "Filter" not in versions, "every object's old versions expire"
    assert versions["NoncurrentVersionExpiration"] == {"NoncurrentDays": {"Ref": "NoncurrentVersionDays"}}
    manifests = rules["expire-old-run-manifests"]
    assert f"s3://{bucket}/{manifests['Prefix']}" == central["Destination"] + "/_state/runs/"
    assert manifests["ExpirationInDays"] == {"Ref": "ManifestRetentionDays"}
    policy = template()["Resources"]["ExportBucketPolicy"]["Properties"]["PolicyDocument"]
    [tls] = policy["Statement"]
    assert tls["Effect"] == "Deny" and tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    [encryption] = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert encryption["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert central["Destination"] == f"s3://{bucket}/appflow-runs"

    [group] = client(moto, "logs").describe_log_groups(logGroupNamePrefix=central["LogGroupName"])["logGroups"]
    assert group["retentionInDays"] == 90

    ecs = client(moto, "ecs")
    task = ecs.describe_task_definition(taskDefinition="appflow-export")["taskDefinition"]
    [container] = task["containerDefinitions"]
    assert container["image"] == IMAGE and container["readonlyRootFilesystem"] is True
    env = {e["name"]: e["value"] for e in container["environment"]}
    # The staging files go to the task's volume, the one writable place.
    [mount] = container["mountPoints"]
    assert env["TMPDIR"] == mount["containerPath"] and mount["readOnly"] is False
    assert f'VOLUME ["{mount["containerPath"]}"]' in (REPO / "Dockerfile").read_text(), "the image's staging volume"
    assert mount["sourceVolume"] in {v["name"] for v in task["volumes"]}
    shown = accepted(container["command"], emulator, tmp_path, env)
    assert shown["dest"] == central["Destination"] and shown["sse"] == "AES256"
    # The job's metrics only: the alarms and dashboard need no per-account ones.
    assert shown["metrics"] == "emf-run" and shown["job_name"] == "appflow-export" and shown["log_format"] == "json"
    assert shown["expected_bucket_owner"] == "123456789012" and shown.get("organization") is False
    # SIGKILL comes stopTimeout after SIGTERM: time for the commit after --stop-timeout.
    assert container["stopTimeout"] >= int(shown["stop_timeout"].rstrip("s")) + 15
    # The alarms watch the job name the task sends its metrics with.
    alarms = [r["Properties"] for r in template()["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert {a["MetricName"] for a in alarms} == {"RunsSucceeded", "FlowsFailed", "RetentionGaps"}
    for alarm in alarms:
        assert alarm["Dimensions"] == [{"Name": "JobName", "Value": {"Ref": "AWS::StackName"}}]
    statistics = {a["MetricName"]: a["Statistic"] for a in alarms}
    assert statistics["FlowsFailed"] == "Maximum", "one run with failed flows is enough"
    assert [t for t in client(moto, "sns").list_topics()["Topics"] if ":appflow-export-AlarmTopic-" in t["TopicArn"]]
    # The run-once command names the stack's cluster, task definition and network
    # (moto's RunTask fails on a container without a memory limit of its own, which
    # Fargate does not need: it is not run here).
    command = shlex.split(central["RunOnceCommand"])
    assert command[:3] == ["aws", "ecs", "run-task"]
    flags = dict(zip(command[3::2], command[4::2]))
    assert flags["--launch-type"] == "FARGATE" and flags["--region"] == "eu-west-1"
    [cluster] = ecs.describe_clusters(clusters=[flags["--cluster"]])["clusters"]
    assert cluster["status"] == "ACTIVE"
    assert flags["--task-definition"] == task["taskDefinitionArn"]
    assert flags["--network-configuration"] == ("awsvpcConfiguration={subnets=[subnet-0123456789abcdef0],"
                                                "securityGroups=[sg-0123456789abcdef0],assignPublicIp=DISABLED}")


def test_the_task_definition_takes_an_organization_and_a_kms_key(moto, tmp_path):
    deploy(moto, "appflow-export-org", Organization="true", ExternalId="appflow-export", KmsKeyArn=KMS_KEY,
           Regions="eu-west-1,us-east-1", MetricsPerAccount="true", ExcludeAccounts="111111111111,222222222222")
    task = client(moto, "ecs").describe_task_definition(taskDefinition="appflow-export-org")["taskDefinition"]
    [container] = task["containerDefinitions"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    shown = run_export(["config", "--print"], env)
    assert_exit(shown, 0)
    options = tomllib.loads(shown.stdout)
    assert options["organization"] is True and options["role_name"] == "appflow-export-reader"
    assert options["external_id"] == "appflow-export" and options["region"] == ["eu-west-1", "us-east-1"]
    assert options["sse"] == "aws:kms" and options["sse_kms_key_id"] == KMS_KEY
    assert options["metrics"] == "emf"  # MetricsPerAccount
    assert options["exclude_accounts"] == ["111111111111", "222222222222"] and "accounts" not in options


def test_the_glue_tables_are_the_codes():
    """The template's tables are what `schema --format cloudformation` prints (its
    BEGIN line's command), and each is `schema --format glue`'s table for the stack's
    bucket and database (`make templates` writes them again)."""
    text = CENTRAL.read_text()
    block = re.search(r"  # BEGIN (appflow-export schema [^\n]*)\n(.*?)  # END ", text, re.S)
    generated = run_export(shlex.split(block[1])[1:])
    assert_exit(generated, 0)
    assert block[2] == generated.stdout, "the tables drifted from the code: run `make templates`"

    glue = run_export(["schema", "--format", "glue", "--dest", "s3://the-bucket/appflow-runs",
                       "--database", "appflow_export"])
    assert_exit(glue, 0)
    wanted = {t["TableInput"]["Name"]: t for t in json.loads(glue.stdout)}
    resources = template()["Resources"]
    assert resources["GlueDatabase"]["Properties"]["DatabaseInput"]["Name"] == {"Ref": "DatabaseName"}
    assert template()["Parameters"]["DatabaseName"]["Default"] == "appflow_export"

    def resolve(value):
        """The template's value once CloudFormation substitutes the bucket and database."""
        if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
            return (value["Fn::Sub"].replace("${ExportBucket}", "the-bucket")
                    .replace("${GlueDatabase}", "appflow_export").replace("${!", "${"))
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    tables = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Glue::Table"]
    assert sorted(t["TableInput"]["Name"] for t in tables) == sorted(wanted)
    for table in tables:
        assert table["CatalogId"] == {"Ref": "AWS::AccountId"}
        resolved = resolve({"DatabaseName": table["DatabaseName"], "TableInput": table["TableInput"]})
        assert resolved == wanted[table["TableInput"]["Name"]]


def fill(path: Path, **values: str) -> dict:
    """A jobs/ document with its `<PLACEHOLDERS>` filled in."""
    text = fill_in(path.read_text(), values)
    assert "<" not in text, f"{path}: a placeholder is left"
    return json.loads(text)


def statements(doc: dict) -> list[dict]:
    return doc["Statement"]


def test_the_task_role_policy_is_jobs_iam_policy(moto, central):
    """The template's task policy and jobs/' policies are one document: what moto's
    IAM holds for the stacks' task roles is jobs/iam-policy.json (SSE-S3),
    jobs/iam-policy-kms.json (a KMS key) and, for an organization, the statements of
    jobs/organization/central-policy.json beside it, filled in."""
    values = {"ACCOUNT_ID": "123456789012", "BUCKET": central["BucketName"]}
    assert role_policy(moto, "appflow-export-task") == fill(JOBS / "iam-policy.json", **values)
    outputs = deploy(moto, "appflow-export-kms-org", Organization="true", ExternalId="appflow-export",
                     KmsKeyArn=KMS_KEY)
    values = {**values, "BUCKET": outputs["BucketName"], "KMS_KEY_ARN": KMS_KEY, "REGION": "eu-west-1"}
    kms = fill(JOBS / "iam-policy-kms.json", **values)
    central_policy = fill(JOBS / "organization" / "central-policy.json", **values)
    assert role_policy(moto, "appflow-export-kms-org-task") == {
        **kms, "Statement": statements(kms) + statements(central_policy)}


S3_STATEMENTS = ["ListTheExport", "ReadTheExport", "WriteTheExportEncrypted", "PruneOldRunManifests"]


def enforce(moto: str, on: bool) -> None:
    """Turns moto's IAM enforcement on or off (it evaluates actions and resources, not
    conditions; it does not enforce KMS)."""
    request = urllib.request.Request(f"{moto}/moto-api/reset-auth", data=b"0" if on else b"inf", method="POST",
                                     headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request, timeout=10).close()


def s3_request_context(seen, owner: str) -> tuple[str, str, dict[str, str]]:
    """The IAM action, resource ARN and the condition keys S3 gives a path-style request
    of the job (the actions it makes; anything else fails the test)."""
    url = urllib.parse.urlsplit(seen.path)
    bucket, _, key = url.path.lstrip("/").partition("/")
    query = urllib.parse.parse_qs(url.query)
    headers = {k.lower(): v for k, v in seen.headers.items()}
    context = {"s3:ResourceAccount": owner}
    if not key and seen.method in ("GET", "HEAD"):
        if "prefix" in query:
            context["s3:prefix"] = query["prefix"][0]
        return "s3:ListBucket", f"arn:aws:s3:::{bucket}", context
    action = {"GET": "s3:GetObject", "HEAD": "s3:GetObject", "PUT": "s3:PutObject",
              "DELETE": "s3:DeleteObject"}[seen.method]
    for header in ("x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id"):
        if header in headers:
            context[f"s3:{header}"] = headers[header]
    return action, f"arn:aws:s3:::{bucket}/{urllib.parse.unquote(key)}", context


def allows(statement: dict, action: str, resource: str, context: dict[str, str]) -> bool:
    """Whether an Allow statement grants `action` on `resource` with these condition
    keys, as IAM evaluates the operators this policy uses (an operator or key this
    does not know fails the test: extend it with the policy)."""
    resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
    if action not in statement["Action"] or not any(fnmatch.fnmatchcase(resource, r) for r in resources):
        return False
    for operator, keys in statement.get("Condition", {}).items():
        assert operator in ("StringEquals", "StringLike"), operator
        for key, wanted in keys.items():
            assert key.startswith("s3:"), key
            wanted = wanted if isinstance(wanted, list) else [wanted]
            value = context.get(key)
            match = fnmatch.fnmatchcase if operator == "StringLike" else str.__eq__
            if value is None or not any(match(value, w) for w in wanted):
                return False
    return True


def test_the_task_policy_is_least_privilege_where_iam_is_enforced(moto, central, emulator, tmp_path):
    """With exactly the task role's policy (its credentials, moto enforcing IAM), the
    task's own configuration exports into the stack's bucket; without any one of its
    S3 statements, the run fails with an error naming the destination and the action
    (or, for removing old manifests, warns)."""
    task = client(moto, "ecs").describe_task_definition(taskDefinition="appflow-export")["taskDefinition"]
    [container] = task["containerDefinitions"]
    role = central["TaskRoleArn"].split("/")[-1]
    policy = role_policy(moto, role)
    sids = [s["Sid"] for s in statements(policy)]
    assert [s for s in sids if s in S3_STATEMENTS] == S3_STATEMENTS
    iam = client(moto, "iam")
    [policy_name] = iam.list_role_policies(RoleName=role)["PolicyNames"]
    assumed = client(moto, "sts").assume_role(RoleArn=central["TaskRoleArn"], RoleSessionName="task")["Credentials"]
    bucket = central["BucketName"]

    def run(*args: str):
        env = {**{e["name"]: e["value"] for e in container["environment"]},
               "TMPDIR": str(tmp_path), "AWS_ACCESS_KEY_ID": assumed["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": assumed["SecretAccessKey"], "AWS_SESSION_TOKEN": assumed["SessionToken"],
               "AWS_ENDPOINT_URL_S3": moto, "AWS_ENDPOINT_URL_APPFLOW": emulator.url,
               "AWS_ENDPOINT_URL_STS": emulator.url}
        return run_export([*container["command"], *args], env)

    def with_policy(doc: dict) -> None:
        enforce(moto, False)
        iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(doc))
        enforce(moto, True)

    try:
        # The same document, written back without the Nones moto keeps for left-out
        # statements (its enforcement fails on them).
        with_policy(policy)
        # Through a proxy that records the requests: moto evaluates no condition, so
        # the statements' conditions are evaluated here against what the job sent.
        proxy = FaultProxy(moto).start()
        try:
            first = run("--s3-endpoint", proxy.url)
        finally:
            proxy.stop()
        assert_exit(first, 0)
        s3_statements = [s for s in statements(policy) if s["Sid"] in S3_STATEMENTS]
        sent = [s3_request_context(seen, "123456789012") for seen in proxy.requests]
        assert {action for action, _, _ in sent} >= {"s3:ListBucket", "s3:GetObject", "s3:PutObject"}, sent
        for action, resource, context in sent:
            assert any(allows(s, action, resource, context) for s in s3_statements), (action, resource, context)
        enforce(moto, False)  # the checks' own calls use moto's root credentials
        keys = [o["Key"] for o in client(moto, "s3").list_objects_v2(Bucket=bucket)["Contents"]]
        assert any(k.startswith("appflow-runs/executions/dt=") for k in keys), keys
        assert any(k.startswith("appflow-runs/_state/runs/") for k in keys), keys
        for sid in S3_STATEMENTS:
            emulator.add_runs(3)
            with_policy({**policy, "Statement": [s for s in statements(policy) if s["Sid"] != sid]})
            result = run("--keep-manifests", "1")
            if sid == "PruneOldRunManifests":
                # Housekeeping: the run succeeds and says what it could not remove.
                assert_exit(result, 0)
                assert "old run manifests could not be removed" in result.stderr and "DeleteObject" in result.stderr
            else:
                assert_exit(result, 3)
                [error] = [json.loads(line)["fields"]["message"] for line in result.stderr.splitlines()
                           if '"level":"ERROR"' in line]
                [action] = next(s["Action"] for s in statements(policy) if s["Sid"] == sid)
                assert bucket in error and action in error, (sid, error)
        # And with the whole policy again, the history exported since is there.
        with_policy(policy)
        assert_exit(run("--keep-manifests", "1"), 0)
    finally:
        enforce(moto, False)
        iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(policy))


# ----------------------------------------------------------------------------- deploy/README.md, run

GUIDE = DEPLOY / "README.md"
# The start of each command of the guide that is not run here, and why.
NOT_RUN = {
    "aws ecr get-login-password": "its password goes to docker login: there is no Docker daemon here",
    "docker buildx build": "there is no Docker daemon here",
    "aws cloudformation activate-organizations-access": "moto does not implement it (it answers 500)",
    "aws cloudformation update-termination-protection": "moto does not implement it (it answers 500)",
    "aws organizations register-delegated-administrator": (
        "moto does not know StackSets' service principal (member.org.stacksets.cloudformation.amazonaws.com)"),
    "aws cloudformation create-stack --stack-name appflow-export-reader": (
        "the management account's own role, for a job in a delegated administrator's account: on moto the "
        "StackSet gave the management account the role already (moto deploys to it, AWS does not)"),
    'eval "$(aws cloudformation describe-stacks': (
        "the run-once RunTask: moto fails on a container without a memory of its own, which Fargate does not "
        "need (test_the_central_stack_creates_what_moto_can checks the command's cluster, task and network)"),
    "aws logs tail": "AWS CLI v2 only: the tests have v1, from PyPI",
}


def guide_blocks() -> list[list[str]]:
    """The commands of each of the guide's ```sh blocks, in order, continuation lines
    joined."""
    blocks = []
    for block in re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), re.S):
        lines = [re.sub(r"[ \t]+", " ", line.strip()) for line in block.replace("\\\n", " ").splitlines()]
        blocks.append([line for line in lines if line and not line.startswith("#")])
    return blocks


def test_every_command_of_the_guide_runs_as_far_as_moto_reaches(tmp_path):
    """deploy/README.md followed as written, with the AWS CLI against moto (an
    organization with a member account): each `aws` command succeeds, in order, except
    those NOT_RUN names; the stacks end as the guide says."""
    proc, moto = start_server([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", "0"],
                              tmp_path / "moto.log")
    try:
        org = client(moto, "organizations")
        org_id = org.create_organization(FeatureSet="ALL")["Organization"]["Id"]
        member = org.create_account(Email="m@example.com", AccountName="member")["CreateAccountStatus"]["AccountId"]
        values = {
            "ACCOUNT_ID": "123456789012", "REGION": "eu-west-1", "TAG": "v1",
            "CENTRAL_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/appflow-export-task",
            "EXTERNAL_ID": "appflow-export", "ORGANIZATION_ID": org_id,
            "ROOT_OR_OU_ID": org.list_roots()["Roots"][0]["Id"], "DELEGATED_ADMIN_ACCOUNT_ID": member,
            "REGIONS": "eu-west-1,us-east-1", "SUBNET_IDS": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
            "SECURITY_GROUP_IDS": "sg-0123456789abcdef0", "ALARM_EMAIL": "data-platform@example.com",
        }
        # The copies the guide has the reader fill in, in the folder the commands run from.
        work = tmp_path / "clone"
        work.mkdir()
        (work / "deploy").symlink_to(DEPLOY)
        for path in [*(DEPLOY / "stackset").glob("*.json"), DEPLOY / "central-stack.json"]:
            text = fill_in(path.read_text(), values)
            assert "<" not in text, path
            (work / path.name).write_text(text)
        env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("AWS_")}
        env.update(PATH=f"{Path(sys.executable).parent}:{env['PATH']}", AWS_ENDPOINT_URL=moto,
                   AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_OUTPUT="json",
                   AWS_DEFAULT_REGION="eu-west-1",  # the reader's CLI is configured for <REGION>
                   AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
        # moto's CloudFormation does not create the stack's Athena workgroup: made as the
        # stack would (by the CLI: moto does not route the newer boto3's Athena calls).
        made = subprocess.run(["aws", "athena", "create-work-group", "--region", "eu-west-1", "--name",
                               "appflow-export"], env=env, capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        skipped, outputs = set(), {}
        for block in guide_blocks():
            script = []
            for command in block:
                start = next((start for start in NOT_RUN if command.startswith(start)), None)
                if start:
                    skipped.add(start)
                    continue
                command = fill_in(command, values)
                assert not re.search(r"<[A-Z_]+>", command), f"a placeholder the test does not know: {command}"
                script.append(command)
            if any(c.startswith("aws cloudformation update-stack") for c in script):
                # The reader's new release, put in their copy as the guide says.
                copy = work / "central-stack.json"
                copy.write_text(copy.read_text().replace("appflow-export:v1", "appflow-export:v2"))
            if not script:
                continue
            done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(script)], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, "\n".join([*script, done.stdout, done.stderr])
            outputs[script[0].split(" --")[0]] = done.stdout
        assert skipped == set(NOT_RUN), f"NOT_RUN names commands the guide no longer has: {set(NOT_RUN) - skipped}"
        # What the guide says the reader sees.
        [stack] = client(moto, "cloudformation").describe_stacks(StackName="appflow-export")["Stacks"]
        assert stack["StackStatus"] == "UPDATE_COMPLETE"
        shown = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
        assert shown["TaskRoleArn"] == values["CENTRAL_TASK_ROLE_ARN"], "step 2 trusts the central task role"
        assert shown["AthenaDatabase"] == "appflow_export" and shown["AthenaWorkGroup"] == "appflow-export"
        assert shown["LogGroupName"] == "/ecs/appflow-export"
        assert json.loads(outputs["aws ecr create-repository"])["repository"]["repositoryUri"] == \
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/appflow-export"
        assert values["CENTRAL_TASK_ROLE_ARN"] in outputs["aws cloudformation create-stack"]
        assert outputs["QUERY_ID=$(aws athena start-query-execution"].startswith("SUCCEEDED\n")
        cfn = client(moto, "cloudformation")
        instances = cfn.list_stack_instances(StackSetName="appflow-export-reader")["Summaries"]
        assert member in {i["Account"] for i in instances}
        # The stack as the reader's copy set it, after the update (moto's update keeps a
        # task definition's image and environment only in part: the parameters say it).
        parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
        assert parameters["ImageUri"] == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/appflow-export:v2"
        assert parameters["Organization"] == "true" and parameters["Regions"] == values["REGIONS"]
        assert parameters["ExternalId"] == values["EXTERNAL_ID"]
    finally:
        stop_process(proc)


def test_the_guides_athena_query_reads_an_export(emulator, local_dest):
    """The guide's query is Athena's SQL (sqlglot) and answers over a real export
    (DuckDB, through `schema --format duckdb`'s views of the same tables)."""
    [query] = re.findall(r'--query-string "([^"]+)"', GUIDE.read_text())
    sqlglot.parse_one(query, read="athena")
    assert_exit(export(emulator, local_dest), 0)
    views = run_export(["schema", "--format", "duckdb", "--dest", local_dest.uri])
    assert_exit(views, 0)
    con = duckdb.connect()
    con.execute(views.stdout)
    rows = con.execute(query).fetchall()
    recent = con.execute("SELECT count(*) FROM executions WHERE dt >= current_date - 7").fetchone()[0]
    assert recent and sum(r[2] for r in rows) == recent, rows


def test_the_central_template_fits_a_template_body():
    assert len(CENTRAL.read_bytes()) < 51_200, "create-stack --template-body takes at most 51,200 bytes"
