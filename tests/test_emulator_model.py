"""The emulator against the official AWS model: botocore's `appflow` client (its
service-2.json) pages everything the emulator serves, and every raw response body is
checked member by member against that model, so the emulator cannot drift from AWS."""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import HISTORY, Emulator, ms

# Enough flows and runs that every status and every optional member shows up.
BIG_HISTORY = {"flows": 40, "runs_per_flow": 80, "days": 20, "seed": 11}
SMALL_HISTORY = {"flows": 6, "runs_per_flow": 30, "days": 3, "seed": 5}
STATUSES = {"InProgress", "Successful", "Error", "CancelStarted", "Canceled"}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def shape_errors(value, shape, path: str = "$") -> list[str]:
    """Where a raw JSON value does not fit a botocore shape: unknown or missing members,
    wrong types, values outside an enum or a length limit."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__}, expected an object"]
        errors = [f"{path}: required member {m} missing" for m in shape.required_members if m not in value]
        for name, member in value.items():
            if name not in shape.members:
                errors.append(f"{path}: unknown member {name!r}")
            else:
                errors += shape_errors(member, shape.members[name], f"{path}.{name}")
        return errors
    if kind == "list":
        if not isinstance(value, list):
            return [f"{path}: {type(value).__name__}, expected an array"]
        return [e for i, item in enumerate(value) for e in shape_errors(item, shape.member, f"{path}[{i}]")]
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__}, expected an object"]
        return [e for k, v in value.items() for e in shape_errors(v, shape.value, f"{path}[{k!r}]")]
    if kind == "string":
        if not isinstance(value, str):
            return [f"{path}: {value!r} is not a string"]
        errors = []
        if shape.enum and value not in shape.enum:
            errors.append(f"{path}: {value!r} is not one of {shape.enum}")
        if "max" in shape.metadata and len(value) > shape.metadata["max"]:
            errors.append(f"{path}: {len(value)} characters, more than {shape.metadata['max']}")
        return errors
    if kind in ("integer", "long"):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{path}: {value!r} is not an integer"]
    if kind == "timestamp":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and abs(value * 1000 - round(value * 1000)) > 1e-3:
            return [f"{path}: {value!r} has more than millisecond precision"]
        return [] if ok else [f"{path}: {value!r} is not epoch seconds"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{path}: {value!r} is not a boolean"]
    return []


def check_raw_response(http_response, model, **_) -> None:
    """botocore `after-call` hook: the raw body of every successful call fits the model."""
    if http_response.status_code >= 300:
        return
    try:
        body = json.loads(http_response.content or b"{}")
    except ValueError as e:
        raise AssertionError(f"{model.name}: the response body is not JSON: {e}") from None
    errors = shape_errors(body, model.output_shape)
    assert not errors, f"{model.name} response does not fit the AWS model:\n" + "\n".join(errors[:20])


def appflow_client(emulator: Emulator):
    client = boto3.client(
        "appflow", endpoint_url=emulator.url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        # One attempt, no retry (botocore's `max_attempts` would count retries).
        config=Config(retries={"total_max_attempts": 1}, parameter_validation=False),
    )
    client.meta.events.register("after-call.appflow.*", check_raw_response)
    return client


def plain(value):
    """A parsed (datetime) or ground-truth (epoch seconds) value with timestamps as ms."""
    if isinstance(value, dt.datetime):
        return round((value - EPOCH) / dt.timedelta(milliseconds=1))
    if isinstance(value, float):
        return ms(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def list_all_flows(client, page_size: int) -> list[dict]:
    flows, token = [], None
    while True:
        resp = client.list_flows(maxResults=page_size, **({"nextToken": token} if token else {}))
        flows += resp["flows"]
        if not (token := resp.get("nextToken")):
            return flows


def all_records(client, flow: str, page_size: int, token: str | None = None) -> list[dict]:
    """Every record of `flow`, from the first page or from `token` on."""
    records = []
    while True:
        resp = client.describe_flow_execution_records(
            flowName=flow, maxResults=page_size, **({"nextToken": token} if token else {}))
        records += resp["flowExecutions"]
        if not (token := resp.get("nextToken")):
            return records


def error_of(call, **params) -> tuple[str, int]:
    with pytest.raises(ClientError) as info:
        call(**params)
    return info.value.response["Error"]["Code"], info.value.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    emu = Emulator(tmp_path_factory.mktemp("emulator"), **BIG_HISTORY)
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def big_truth(big) -> list[dict]:
    return big.flows()


@pytest.fixture
def small(start_emulator) -> Emulator:
    return start_emulator(**SMALL_HISTORY)


@pytest.mark.parametrize("page_size", [7, 100])
def test_api_serves_exactly_the_ground_truth(big, big_truth, page_size):
    client = appflow_client(big)
    listed = list_all_flows(client, page_size)
    names = [f["flowName"] for f in listed]
    assert len(names) == len(set(names)) == BIG_HISTORY["flows"], "ListFlows pages repeat or miss flows"
    truth_by_name = {f["definition"]["flowName"]: f for f in big_truth}
    assert set(names) == set(truth_by_name)
    for flow in listed:
        definition = dict(truth_by_name[flow["flowName"]]["definition"])
        got = plain(flow)
        got.pop("lastRunExecutionDetails", None)  # derived from the newest run, not in the definition
        assert got == plain(definition), f"ListFlows entry of {flow['flowName']}"
    for name, flow in truth_by_name.items():
        records = all_records(client, name, page_size)
        assert plain(records) == plain(flow["records"]), f"records of {name} differ from the ground truth"


def test_describe_flow_matches_the_definitions(big, big_truth):
    client = appflow_client(big)
    for flow in big_truth:
        d = flow["definition"]
        described = plain(client.describe_flow(flowName=d["flowName"]))
        got = {
            **{k: described.get(k) for k in ("flowArn", "flowName", "description", "flowStatus", "createdAt",
                                              "lastUpdatedAt", "createdBy", "lastUpdatedBy", "tags")},
            "sourceConnectorType": described["sourceFlowConfig"]["connectorType"],
            "destinationConnectorType": described["destinationFlowConfigList"][0]["connectorType"],
            "triggerType": described["triggerConfig"]["triggerType"],
        }
        assert got == {k: plain(d).get(k) for k in got}, f"DescribeFlow of {d['flowName']}"


@pytest.mark.parametrize("operation", ["list_flows", "describe_flow_execution_records"])
@pytest.mark.parametrize("params", [{"maxResults": 0}, {"maxResults": 101}, {"nextToken": "garbage!"}],
                         ids=["maxResults=0", "maxResults=101", "bad-token"])
def test_invalid_requests_are_validation_errors(big, big_truth, operation, params):
    client = appflow_client(big)
    if operation == "describe_flow_execution_records":
        params = {"flowName": big_truth[0]["definition"]["flowName"], **params}
    assert error_of(getattr(client, operation), **params) == ("ValidationException", 400)


def test_token_of_another_flow_is_rejected(big, big_truth):
    client = appflow_client(big)
    first, second = (f["definition"]["flowName"] for f in big_truth[:2])
    token = client.describe_flow_execution_records(flowName=first, maxResults=5)["nextToken"]
    assert error_of(client.describe_flow_execution_records, flowName=second, nextToken=token) \
        == ("ValidationException", 400)


@pytest.mark.parametrize("operation", ["describe_flow", "describe_flow_execution_records"])
def test_unknown_flow_is_not_found(big, operation):
    code = error_of(getattr(appflow_client(big), operation), flowName="no-such-flow")
    assert code == ("ResourceNotFoundException", 404)


def test_sts_caller_identity_names_the_emulator_account(small):
    """botocore's STS client (query protocol, XML) parses the emulator's answer."""
    sts = boto3.client("sts", endpoint_url=small.url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing",
                       config=Config(retries={"total_max_attempts": 1}))
    identity = sts.get_caller_identity()
    assert identity["Account"] == HISTORY["account"]  # start_emulator adds HISTORY's account
    assert identity["Arn"].startswith(f"arn:aws:iam::{identity['Account']}:")
    assert error_of(sts.get_session_token)[1] == 400


def test_throttling(small):
    small.set_faults({"throttle_fraction": 1.0})
    assert error_of(appflow_client(small).list_flows) == ("ThrottlingException", 429)
    assert small.counters()["operations"]["ListFlows"]["throttled"] == 1


def test_fail_next(small):
    client = appflow_client(small)
    small.set_faults({"fail_next": 2})
    for _ in range(2):
        assert error_of(client.list_flows) == ("InternalServerException", 500)
    assert len(client.list_flows(maxResults=100)["flows"]) == SMALL_HISTORY["flows"]
    assert small.counters()["operations"]["ListFlows"] == {"calls": 3, "throttled": 0, "failed": 2}


def test_shuffled_order_is_a_stable_permutation(small):
    client = appflow_client(small)
    names = [f["definition"]["flowName"] for f in small.flows()]
    ordered = {n: all_records(client, n, 7) for n in names}
    small.set_faults({"shuffled": True})
    shuffled = {n: all_records(client, n, 7) for n in names}
    for n in names:
        ids = sorted(r["executionId"] for r in ordered[n])
        assert sorted(r["executionId"] for r in shuffled[n]) == ids, f"{n}: shuffled mode changes the runs"
        assert plain(all_records(client, n, 100)) == plain(shuffled[n]), f"{n}: the shuffle is not stable"
    assert any(ordered[n] != shuffled[n] for n in names), "shuffled mode serves newest-first"


def test_paging_is_stable_while_runs_are_added(small):
    client = appflow_client(small)
    name = small.flow_names()[0]
    before = [r["executionId"] for r in small.flows()[0]["records"]]
    first = client.describe_flow_execution_records(flowName=name, maxResults=10)
    added = small.add_runs(5, flows=[name])
    rest = all_records(client, name, 10, token=first["nextToken"])
    paged = [r["executionId"] for r in first["flowExecutions"] + rest]
    assert paged == before, "runs added at the front shift or repeat the later pages"
    assert len(added) == 5


def test_malformed_flow_breaks_after_a_good_first_page(small):
    name = small.flow_names()[0]
    small.set_faults({"malformed_flows": [name]})

    def page(**params):
        req = urllib.request.Request(f"{small.url}/describe-flow-execution-records", method="POST",
                                     data=json.dumps({"flowName": name, **params}).encode())
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read()

    first = json.loads(page(maxResults=10))
    assert len(first["flowExecutions"]) == 10
    with pytest.raises(ValueError):
        json.loads(page(maxResults=10, nextToken=first["nextToken"]))
    with pytest.raises(ValueError):
        json.loads(page(maxResults=100))  # a single page: no good first page to give


def test_flow_names_cover_the_allowed_alphabet(big_truth):
    names = [f["definition"]["flowName"] for f in big_truth]
    bad = [n for n in names if not re.fullmatch(r"[a-zA-Z0-9][\w!@#.-]+", n) or len(n) > 256]
    assert not bad, f"names AWS would not allow: {bad}"
    assert any(len(n) == 256 for n in names), "no name of the maximum length (256)"
    for char in "!@#.":
        assert any(char in n for n in names), f"no name uses {char!r}"


def test_history_covers_statuses_and_optional_members(big_truth):
    records = [r for f in big_truth for r in f["records"]]
    assert {r["executionStatus"] for r in records} == STATUSES
    assert any(r["executionResult"]["bytesProcessed"] > 2**32 for r in records), "no byte count above 2^32"
    details = [d for r in records for d in r.get("metadataCatalogDetails", [])]
    optional = {
        "dataPullStartTime": (records, lambda r: r),
        "dataPullEndTime": (records, lambda r: r),
        "metadataCatalogDetails": (records, lambda r: r),
        "errorInfo": (records, lambda r: r["executionResult"]),
        "numParallelProcesses": (records, lambda r: r["executionResult"]),
        "maxPageSize": (records, lambda r: r["executionResult"]),
        "executionMessage": (records, lambda r: r["executionResult"].get("errorInfo", {})),
        "partitionRegistrationOutput": (details, lambda d: d),
        "result": (details, lambda d: d["tableRegistrationOutput"]),
    }
    for member, (items, parent) in optional.items():
        present = sum(member in parent(item) for item in items)
        assert 0 < present < len(items), f"{member} is present in {present} of {len(items)}: never absent or never there"


def test_one_emulator_serves_each_account_and_region_by_the_credential(tmp_path):
    """Accounts and regions behind one endpoint: botocore's STS parses the emulator's
    AssumeRole, whose key names the role's account (moto's keys are decoded the same
    way), and AppFlow answers each (account, region) with its own flows; a pair it does
    not serve is refused as AWS refuses an unknown key."""
    from moto.iam.utils import generate_access_key_id_from_account_id

    accounts, regions = ["111111111111", "222222222222"], ["eu-west-1", "us-east-1"]
    emu = Emulator(tmp_path, **{**SMALL_HISTORY, "account": accounts, "region": regions})
    try:
        sts = boto3.client("sts", endpoint_url=emu.url, region_name="eu-west-1",
                           aws_access_key_id="testing", aws_secret_access_key="x")
        assert sts.get_caller_identity()["Account"] == accounts[0], "a key naming no account: the first"
        creds = sts.assume_role(RoleArn=f"arn:aws:iam::{accounts[1]}:role/reader",
                                RoleSessionName="e2e")["Credentials"]
        as_role = {"aws_access_key_id": creds["AccessKeyId"], "aws_secret_access_key": creds["SecretAccessKey"],
                   "aws_session_token": creds["SessionToken"]}
        assert boto3.client("sts", endpoint_url=emu.url, region_name="eu-west-1", **as_role) \
            .get_caller_identity()["Account"] == accounts[1]
        moto_key = {"aws_access_key_id": generate_access_key_id_from_account_id(accounts[1], "ASIA"),
                    "aws_secret_access_key": "x", "aws_session_token": "t"}
        for key in (as_role, moto_key):
            for region in regions:
                appflow = boto3.client("appflow", endpoint_url=emu.url, region_name=region, **key)
                arns = [f["flowArn"] for f in appflow.list_flows()["flows"]]
                assert arns and all(arn.split(":")[3:5] == [region, accounts[1]] for arn in arns), arns
                truth = [f["definition"]["flowArn"] for f in emu.tenant(accounts[1], region).flows()]
                assert sorted(arns) == sorted(truth)
        other = boto3.client("appflow", endpoint_url=emu.url, region_name="ap-south-1", **as_role)
        with pytest.raises(ClientError) as refused:
            other.list_flows()
        assert refused.value.response["Error"]["Code"] == "UnrecognizedClientException"
    finally:
        emu.stop()
