"""One job for a whole AWS organization (hub and spoke): the job runs in the central
account that owns the bucket, lists the organization's ACTIVE accounts, reads each
member's AppFlow through the member's read-only role, and writes the export with its
own credentials, signed for the bucket's region, several targets at once.

What plays AWS, all on loopback: moto (S3, STS, Organizations; it gives an assumed
role's credentials the role's account, encoded in the access key as AWS does), one
emulator serving every account and region its own flows (it reads the account from
the access key and the region from the SigV4 scope), and the suite's proxy in front of
moto for what moto does not do: S3's answers to a request signed for the wrong region,
STS refusing an AssumeRole, small ListAccounts pages. The proxy records every request,
so the tests check what each was signed with."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

import boto3
import pytest

from conftest import (MOTO_BIN, assert_exit, assert_layout, assert_same, read_output, run_export, s3_client,
                      start_server, stop_process, truth_of)
from s3_faults import FaultPlan, FaultProxy

MANAGEMENT = "123456789012"  # moto's account for the job's own key ("testing")
REGIONS = ["eu-west-2", "us-east-1"]
BUCKET_REGION = "eu-central-1"  # a third region: neither target region signs for it
ROLE = "appflow-export-reader"
EXTERNAL_ID = "appflow-export-e2e"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """A moto server of this module's own: an organization is global to a server."""
    proc, url = start_server([str(MOTO_BIN), "-H", "127.0.0.1", "-p", "0"],
                             tmp_path_factory.mktemp("moto-org") / "moto.log")
    yield url
    stop_process(proc)


@pytest.fixture(scope="module")
def organization(moto):
    """The management account (the job's own) and two ACTIVE members; a third member
    is closed (SUSPENDED) and must never be read."""
    org = boto3.client("organizations", endpoint_url=moto, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    org.create_organization(FeatureSet="ALL")
    members = [org.create_account(Email=f"m{i}@example.com", AccountName=f"member-{i}")
               ["CreateAccountStatus"]["AccountId"] for i in range(3)]
    org.close_account(AccountId=members[2])
    return {"active": sorted([MANAGEMENT, *members[:2]]), "members": members[:2], "closed": members[2]}


@pytest.fixture(scope="module")
def emulator(organization, start_module_emulator):
    """One emulator serving every account (the closed one too) in both regions."""
    accounts = [MANAGEMENT, *organization["members"], organization["closed"]]
    return start_module_emulator(account=accounts, region=REGIONS, flows=3, runs_per_flow=30, seed=11)


class World:
    """A fresh bucket in BUCKET_REGION behind a fresh proxy."""

    def __init__(self, moto: str, scratch, plan: FaultPlan | None = None):
        self.s3 = s3_client(moto)
        self.bucket = f"org-{dt.datetime.now().strftime('%H%M%S%f')}"
        self.s3.create_bucket(Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": BUCKET_REGION})
        plan = plan or FaultPlan()
        plan.bucket_regions = {self.bucket: BUCKET_REGION}
        self.proxy = FaultProxy(moto, plan).start()
        self.scratch = scratch
        self.uri = f"s3://{self.bucket}/org"

    def run(self, emulator, *args, env: dict | None = None, timeout: float = 300):
        base = {"AWS_ENDPOINT_URL_APPFLOW": emulator.url, "AWS_ENDPOINT_URL_S3": self.proxy.url,
                "AWS_ENDPOINT_URL_STS": self.proxy.url, "AWS_ENDPOINT_URL_ORGANIZATIONS": self.proxy.url}
        return run_export(["run", "--dest", self.uri, "--s3-path-style", *args], {**base, **(env or {})},
                          timeout=timeout)

    def signed(self, service: str) -> list[tuple[str, str, str, str]]:
        """(method, path, key, region) of every request to `service`."""
        out = []
        for r in self.proxy.requests:
            cred = r.credential()
            if cred and cred[2] == service:
                out.append((r.method, r.path, cred[0], cred[1]))
        return out

    def assumed(self) -> list[tuple[str, str | None]]:
        """(role ARN, external id) of every AssumeRole the job sent."""
        return [(f["RoleArn"], f.get("ExternalId")) for r in self.proxy.requests
                if (c := r.credential()) and c[2] == "sts" and (f := r.form()).get("Action") == "AssumeRole"]

    def local_copy(self):
        root = Path(tempfile.mkdtemp(dir=self.scratch, prefix="s3copy-"))
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="org/")
        for obj in (o for page in pages for o in page.get("Contents", [])):
            target = root / obj["Key"][len("org/"):]
            target.parent.mkdir(parents=True, exist_ok=True)
            self.s3.download_file(self.bucket, obj["Key"], str(target))
        return root

    def manifests(self) -> list[dict]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="org/_state/runs/")
        docs = [json.loads(self.s3.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read())
                for page in pages for o in page.get("Contents", [])]
        return sorted(docs, key=lambda m: m["run_id"])

    def stop(self):
        self.proxy.stop()


@pytest.fixture
def world(moto, tmp_path):
    made = []

    def make(plan: FaultPlan | None = None) -> World:
        w = World(moto, tmp_path, plan)
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()


def assert_rows(world: World, want) -> None:
    root = world.local_copy()
    assert_layout(root, want)
    assert_same(read_output(root), want)


def role(account: str) -> str:
    return f"arn:aws:iam::{account}:role/{ROLE}"


def org_args(*extra: str) -> list[str]:
    return ["--organization", "--role-name", ROLE, "--region", ",".join(REGIONS),
            "--external-id", EXTERNAL_ID, *extra]


def test_an_organization_is_exported_through_member_roles_and_written_as_the_job(emulator, organization, world):
    w = world(FaultPlan(list_accounts_page=1))
    result = w.run(emulator, *org_args())
    assert_exit(result, 0)
    places = [(a, r) for a in organization["active"] for r in REGIONS]
    assert_rows(w, truth_of(emulator, places))
    # Every ACTIVE account listed, a page at a time; the closed one never read.
    list_calls = [r for r in w.proxy.requests if r.target().endswith(".ListAccounts")]
    assert len(list_calls) >= 4, len(list_calls)
    # Members through their role, with the external id; the job's own account with its
    # own credentials (no AssumeRole of a role in it).
    assert {arn for arn, _ in w.assumed()} == {role(m) for m in organization["members"]}
    assert {ext for _, ext in w.assumed()} == {EXTERNAL_ID}
    assert organization["closed"] not in result.stdout
    assert "SUSPENDED" in result.stderr  # logged as not exported
    for region in REGIONS:
        assert emulator.tenant(organization["closed"], region).api_calls() == 0
    # The destination: only ever the job's own key, signed for the bucket's region (the
    # one request signed otherwise is the HeadBucket that asks S3 for that region).
    s3 = w.signed("s3")
    assert {key for _, _, key, _ in s3} == {"testing"}
    other = [(m, p, region) for m, p, _, region in s3 if region != BUCKET_REGION]
    assert len(other) == 1 and other[0][0] == "HEAD", other
    # Each target's outcome: one manifest per (account, region), each exit 0.
    got = sorted((m["account_id"], m["region"], m["role_arn"], m["exit_code"]) for m in w.manifests())
    assert got == sorted((a, r, None if a == MANAGEMENT else role(a), 0) for a, r in places)
    for account in organization["active"]:
        assert account in result.stdout


def test_accounts_and_exclude_accounts_filter_the_organization(emulator, organization, world):
    member, other = organization["members"]
    w = world()
    assert_exit(w.run(emulator, *org_args("--accounts", member)), 0)
    assert_rows(w, truth_of(emulator, [(member, r) for r in REGIONS]))
    assert {arn for arn, _ in w.assumed()} == {role(member)}
    w = world()
    assert_exit(w.run(emulator, *org_args("--exclude-accounts", member)), 0)
    assert_rows(w, truth_of(emulator, [(a, r) for a in (MANAGEMENT, other) for r in REGIONS]))
    assert {arn for arn, _ in w.assumed()} == {role(other)}


def test_an_account_not_in_the_organization_is_an_error_naming_it(emulator, organization, world):
    w = world()
    result = w.run(emulator, *org_args("--accounts", organization["closed"]))
    assert_exit(result, 1)
    assert organization["closed"] in result.stderr


def test_a_denied_member_leaves_the_others_exact(emulator, organization, world):
    # One target at a time, the denied account before the other member (targets go
    # in account order): a failure that stopped the run would leave that one out.
    denied, fine = sorted(organization["members"])
    w = world(FaultPlan(deny_assume=(role(denied),)))
    result = w.run(emulator, *org_args("--metrics", "emf", "--target-concurrency", "1"))
    assert_exit(result, 1)
    assert_rows(w, truth_of(emulator, [(a, r) for a in (MANAGEMENT, fine) for r in REGIONS]))
    # The denied account is named, with each region, in the summary and the error.
    failed = [line for line in result.stdout.splitlines() if "FAILED" in line]
    assert sorted(failed) == sorted(l for l in failed if denied in l) and len(failed) == 2, result.stdout
    assert all(any(r in l for l in failed) for r in REGIONS)
    assert "AssumeRole" in result.stdout + result.stderr
    manifests = {(m["account_id"], m["region"]): m for m in w.manifests()}
    assert sorted(manifests) == sorted((a, r) for a in organization["active"] for r in REGIONS)
    for (account, _region), m in manifests.items():
        assert m["exit_code"] == (1 if account == denied else 0), m
    assert all("AssumeRole" in " ".join(m["errors"]) for (a, _), m in manifests.items() if a == denied)
    # EMF: the denied account's lines say it did not succeed, the others' that they did.
    lines = [json.loads(l) for l in result.stdout.splitlines() if l.startswith("{")]
    per_target = {(l["Account"], l["Region"]): l["RunsSucceeded"] for l in lines if "Account" in l}
    assert per_target == {(a, r): (0 if a == denied else 1) for a in organization["active"] for r in REGIONS}
    # `status` names it too.
    status = run_export(["status", "--dest", w.uri, "--s3-path-style", "--runs", "20"],
                        {"AWS_ENDPOINT_URL_S3": w.proxy.url})
    assert_exit(status, 0)
    assert sum(1 for l in status.stdout.splitlines() if denied in l and " 1 " in l) == 2, status.stdout


def test_a_member_without_appflow_permissions_fails_alone(emulator, organization, world):
    member = organization["members"][0]
    denied = emulator.tenant(member, "us-east-1")
    denied.set_faults({"access_denied": True})
    try:
        w = world()
        result = w.run(emulator, *org_args())
    finally:
        denied.set_faults({})
    assert_exit(result, 1)
    places = [(a, r) for a in organization["active"] for r in REGIONS if (a, r) != (member, "us-east-1")]
    assert_rows(w, truth_of(emulator, places))
    failed = [line for line in result.stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and member in failed[0] and "us-east-1" in failed[0], result.stdout
    assert "access denied" in failed[0]


def test_the_destination_can_be_written_through_its_own_role(emulator, organization, world):
    writer = f"arn:aws:iam::{MANAGEMENT}:role/appflow-export-writer"
    w = world()
    result = w.run(emulator, *org_args("--accounts", organization["members"][0], "--dest-role-arn", writer))
    assert_exit(result, 0)
    assert writer in {arn for arn, _ in w.assumed()}
    keys = {key for _, _, key, _ in w.signed("s3")}
    # moto issued the role's credentials: an ASIA key of the role's account.
    assert len(keys) == 1 and next(iter(keys)).startswith("ASIA") and "testing" not in keys


def test_targets_overlap_with_target_concurrency_4_and_not_with_1(emulator, organization, world):
    for tenant in [(a, r) for a in organization["active"] for r in REGIONS]:
        emulator.tenant(*tenant).set_faults({"latency_ms": 150})
    try:
        spans = {}
        for n in (1, 4):
            w = world()
            assert_exit(w.run(emulator, *org_args("--target-concurrency", str(n))), 0)
            spans[n] = sorted((dt.datetime.fromisoformat(m["started_at"]), dt.datetime.fromisoformat(m["finished_at"]))
                              for m in w.manifests())
    finally:
        for tenant in [(a, r) for a in organization["active"] for r in REGIONS]:
            emulator.tenant(*tenant).set_faults({})

    def overlaps(intervals):
        return sum(1 for (_, end), (start, _) in zip(intervals, intervals[1:]) if start < end)

    assert len(spans[1]) == len(spans[4]) == 6
    assert overlaps(spans[1]) == 0, spans[1]
    assert overlaps(spans[4]) >= 3, spans[4]


def test_dest_region_signs_every_request_for_the_bucket_with_no_lookup(emulator, world):
    w = world()
    result = w.run(emulator, "--region", ",".join(REGIONS), "--dest-region", BUCKET_REGION)
    assert_exit(result, 0)
    assert_rows(w, truth_of(emulator, [(MANAGEMENT, r) for r in REGIONS]))
    s3 = w.signed("s3")
    assert {region for *_, region in s3} == {BUCKET_REGION}
    assert "HEAD" not in {method for method, *_ in s3}


def test_a_wrong_dest_region_fails_naming_the_buckets(emulator, world):
    w = world()
    result = w.run(emulator, "--region", "eu-west-2", "--dest-region", "us-west-2")
    assert_exit(result, 3)
    assert f"is in {BUCKET_REGION}" in result.stderr and f"--dest-region {BUCKET_REGION}" in result.stderr
    assert w.s3.list_objects_v2(Bucket=w.bucket).get("KeyCount", 0) == 0


def test_status_reads_a_bucket_of_another_region(emulator, world):
    w = world()
    assert_exit(w.run(emulator, "--region", "eu-west-2"), 0)
    status = run_export(["status", "--dest", w.uri, "--s3-path-style", "--region", "us-east-1"],
                        {"AWS_ENDPOINT_URL_S3": w.proxy.url})
    assert_exit(status, 0)
    assert f"{MANAGEMENT}  eu-west-2" in status.stdout


def test_a_destination_lost_part_way_starts_no_further_target(emulator, organization, world):
    """The bucket refuses the job after the first target (a policy changed): the target
    that finds it so fails, and no target starts after it (each would fail alike); the
    summary names them."""
    import time

    from conftest import ExportProcess

    w = world()
    places = [(a, r) for a in organization["active"] for r in REGIONS]
    for place in places:
        emulator.tenant(*place).set_faults({"latency_ms": 200})
    try:
        env = {"AWS_ENDPOINT_URL_APPFLOW": emulator.url, "AWS_ENDPOINT_URL_S3": w.proxy.url,
               "AWS_ENDPOINT_URL_STS": w.proxy.url, "AWS_ENDPOINT_URL_ORGANIZATIONS": w.proxy.url}
        run = ExportProcess(["run", "--dest", w.uri, "--s3-path-style", *org_args("--target-concurrency", "1")], env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not w.s3.list_objects_v2(
                Bucket=w.bucket, Prefix="org/_state/runs/").get("KeyCount"):
            time.sleep(0.05)
        w.proxy.plan.deny_methods = ("GET", "PUT", "HEAD", "POST", "DELETE")
        result = run.wait(120)
    finally:
        for place in places:
            emulator.tenant(*place).set_faults({})
    assert_exit(result, 3)
    not_started = [line for line in result.stdout.splitlines() if "NOT STARTED" in line]
    assert not_started and all("destination failed" in line for line in not_started), result.stdout
    assert "access to bucket" in result.stdout + result.stderr
