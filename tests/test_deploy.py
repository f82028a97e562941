"""deploy/: the CloudFormation templates pass cfn-lint and deploy on moto, the requests
deploy/README.md runs fit AWS's API (botocore's model), and what they create is what
the job needs: no more.

moto plays CloudFormation (StackSets included), Organizations, IAM and STS. It grants
every AssumeRole and evaluates no policy condition: the trust's conditions are checked
as written, not enforced."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import boto3
import botocore.session
import pytest
from botocore.validate import validate_parameters

from conftest import REPO, assert_exit, export, start_server, stop_process

DEPLOY = REPO / "deploy"
TEMPLATES = sorted((DEPLOY / "cloudformation").glob("*.yaml"))
MEMBER_POLICY = REPO / "jobs" / "organization" / "member-role-policy.json"
MEMBER_TRUST = REPO / "jobs" / "organization" / "member-trust-policy.json"
CENTRAL_ROLE = "arn:aws:iam::123456789012:role/appflow-export"  # moto's account for the key "testing"


def request(path: Path, service: str, operation: str, values: dict[str, str]) -> dict:
    """A `--cli-input-json` file with its `<PLACEHOLDERS>` filled in, checked against
    botocore's model of `operation`."""
    text = path.read_text()
    for name, value in values.items():
        text = text.replace(f"<{name}>", value)
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
    trust = json.loads(MEMBER_TRUST.read_text().replace("o-exampleorgid", org_id))
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
