"""AWS's throttling costs a retry, not the run. Each account and region's AppFlow
calls go through a limit of calls in flight (`--concurrency` its ceiling) that falls
while AWS keeps throttling and climbs back when it stops; a throttle now and then
lowers nothing.

The emulator throttles by counting (`throttle_every`, a `schedule` of faults after so
many calls), so nothing here depends on timing, and it logs every call with the calls
in flight when it came: what the job sent, seen from the server, beside what the job
reports (summary, manifest, EMF)."""

from __future__ import annotations

import json

import pytest

from conftest import HISTORY, assert_exit, assert_export, export, run_export, run_args, truth, truth_of
from test_signals import emf_lines

LATENCY = 20  # ms a call: calls overlap, so the calls in flight mean something


def manifest(dest) -> dict:
    (path,) = (dest.path / "_state" / "runs").glob("*.json")
    return json.loads(path.read_text())


def throttled_calls(emulator) -> int:
    return sum(op["throttled"] for op in emulator.counters()["operations"].values())


def test_concurrency_is_the_ceiling_of_calls_in_flight(start_emulator, local_dest):
    """Twelve flows are read at once for three calls: never more than three calls."""
    emulator = start_emulator(flows=24, runs_per_flow=250)
    emulator.set_faults({"latency_ms": LATENCY})
    result = export(emulator, local_dest, "--concurrency", "3")
    assert_exit(result, 0)
    assert_export(local_dest, truth(emulator))
    in_flight = [c["in_flight"] for c in emulator.calls()]
    assert max(in_flight) == 3, f"at most {max(in_flight)} calls in flight"
    m = manifest(local_dest)
    assert (m["concurrency"], m["concurrency_limit_lowest"], m["concurrency_limit_highest"]) == (3, 3, 3), m


def test_a_throttle_now_and_then_lowers_nothing(start_emulator, local_dest):
    """One call in ten throttled (as AWS may throttle a few calls of an account whose
    quota others share): each is retried, and the limit stays at the ceiling."""
    emulator = start_emulator(flows=40, runs_per_flow=500)
    emulator.set_faults({"latency_ms": LATENCY, "throttle_every": 10})
    result = export(emulator, local_dest)
    assert_exit(result, 0)
    assert_export(local_dest, truth(emulator))
    calls = emulator.calls()
    assert throttled_calls(emulator) >= len(calls) // 10 > 10
    m = manifest(local_dest)
    assert (m["concurrency_limit_lowest"], m["concurrency_limit_highest"]) == (8, 8), m
    assert m["throttled_calls"] == throttled_calls(emulator), m
    assert max(c["in_flight"] for c in calls[len(calls) // 2:]) == 8


def test_the_limit_falls_under_sustained_throttling_and_climbs_back(start_emulator, local_dest):
    """Calls 101 to 250 are all throttled (a storm), then none: the limit falls to one
    call in flight during the storm, climbs back to the ceiling after it, no flow fails
    (150 throttled retries would use up the SDK's retry quota if they spent it), and
    the summary, the manifest and the EMF lines say how low it went."""
    emulator = start_emulator(flows=60, runs_per_flow=1000)
    normal = {"latency_ms": LATENCY}
    storm = {**normal, "throttle_every": 1}
    emulator.set_faults({**normal, "schedule": [{"after_calls": 100, "faults": storm},
                                                {"after_calls": 250, "faults": normal}]})
    result = export(emulator, local_dest, "--metrics", "emf")
    assert_exit(result, 0)
    assert_export(local_dest, truth(emulator))
    calls = emulator.calls()
    before, during, after = calls[:100], calls[100:250], calls[250:]
    assert all(c["throttled"] for c in during) and not any(c["throttled"] for c in before + after)
    assert max(c["in_flight"] for c in before) == 8
    # Its first window of answers lowers the limit to one; the calls still in flight
    # from before end; the rest of the storm comes one call at a time.
    assert max(c["in_flight"] for c in during[-30:]) == 1, [c["in_flight"] for c in during]
    assert max(c["in_flight"] for c in after) == 8, [c["in_flight"] for c in after]
    m = manifest(local_dest)
    assert (m["concurrency"], m["concurrency_limit_lowest"], m["concurrency_limit_highest"]) == (8, 1, 8), m
    assert m["throttled_calls"] == 150 == throttled_calls(emulator), m
    assert "throttled  150 of" in result.stdout and "limited to 1 at the lowest, 8 at the highest (--concurrency 8)" \
        in result.stdout, result.stdout
    for line in emf_lines(result.stdout):
        assert (line["ConcurrencyLimitLowest"], line["ConcurrencyLimitHighest"]) == (1, 8), line
        assert line["ThrottledCalls"] == 150 and line["FlowsFailed"] == 0, line


def test_each_account_has_its_own_limit(start_emulator, local_dest):
    """Two accounts read at once: a storm in B lowers B's limit only; A's calls stay at
    the ceiling throughout, and together they never exceed targets x --concurrency."""
    a, b, region = HISTORY["account"], "333344445555", HISTORY["region"]
    emulator = start_emulator(account=[a, b], region=[region], flows=40, runs_per_flow=500, seed=7)
    normal = {"latency_ms": LATENCY}
    # A's calls take five times as long: A is still being read when B's storm is over.
    emulator.tenant(a, region).set_faults({"latency_ms": 5 * LATENCY})
    # B: its listing, then 60 calls throttled while its flows are read.
    emulator.tenant(b, region).set_faults({**normal, "schedule": [
        {"after_calls": 1, "faults": {**normal, "throttle_every": 1}},
        {"after_calls": 61, "faults": normal}]})
    roles = ",".join(f"arn:aws:iam::{acct}:role/appflow-export" for acct in (a, b))
    args, env = run_args(emulator, local_dest, "--role-arn", roles, "--region", region,
                         "--concurrency", "3", "--target-concurrency", "2")
    result = run_export(args, env)
    assert_exit(result, 0)
    assert_export(local_dest, truth_of(emulator, [(a, region), (b, region)]))
    calls_a, calls_b = emulator.tenant(a, region).calls(), emulator.tenant(b, region).calls()
    # Both were read at the same time: B's storm happened while A was being read.
    assert [c["throttled"] for c in calls_b[:62]] == [False] + [True] * 60 + [False]
    storm_end = calls_b[60]["at_ms"]
    assert calls_a[0]["at_ms"] < storm_end < calls_a[-1]["at_ms"], (calls_a[0], storm_end, calls_a[-1])
    assert not any(c["throttled"] for c in calls_a)
    assert max(c["in_flight"] for c in calls_a if c["at_ms"] <= storm_end) == 3
    assert max(c["in_flight"] for c in calls_a) == 3 and max(c["in_flight"] for c in calls_b) <= 3
    limits = {}
    for path in (local_dest.path / "_state" / "runs").glob("*.json"):
        m = json.loads(path.read_text())
        limits[m["account_id"]] = (m["concurrency_limit_lowest"], m["concurrency_limit_highest"], m["throttled_calls"])
    assert limits == {a: (3, 3, 0), b: (1, 3, 60)}, limits


def test_a_call_waiting_long_for_its_turn_is_not_a_timeout(start_emulator, local_dest):
    """Slow answers and one call in flight for the four flows read at once: a call waits
    for its turn longer than the SDK's stalled-upload check allows a request body to
    stand still (about 6 s). Waiting for the limit is not a timeout: every flow is
    exported, one request a page."""
    emulator = start_emulator(flows=4, runs_per_flow=100)
    emulator.set_faults({"latency_ms": 2500})  # the fourth flow waits 7.5 s
    result = export(emulator, local_dest, "--concurrency", "1")
    assert_exit(result, 0)
    assert_export(local_dest, truth(emulator))
    assert "did not answer" not in result.stderr, result.stderr
    assert emulator.api_calls() == 1 + 4, emulator.counters()
    waits = [c["in_flight"] for c in emulator.calls()]
    assert waits == [1] * 5, waits


def test_throttling_that_outlasts_every_attempt_fails_the_flow_and_names_it(start_emulator, local_dest):
    """Throttled on every attempt of a call, a flow fails (exit 1) naming the flow and
    the throttling, nothing of it is written, and a rerun once it stops is exact."""
    emulator = start_emulator(flows=4, runs_per_flow=150)
    victim = emulator.flow_names()[2]
    # One call at a time; ListFlows then each flow in turn. Fail every call after the
    # listing for long enough that one call's 3 attempts are all throttled.
    emulator.set_faults({"schedule": [{"after_calls": 1, "faults": {"throttle_every": 1}},
                                      {"after_calls": 4, "faults": {}}]})
    result = export(emulator, local_dest, "--concurrency", "1", "--max-attempts", "3", "--flows", victim)
    assert_exit(result, 1)
    assert victim in result.stderr and "ThrottlingException" in result.stderr, result.stderr
    assert not list(local_dest.path.glob("executions/**/*.parquet")), "nothing of the failed flow is written"
    emulator.set_faults({})
    assert_exit(export(emulator, local_dest, "--flows", victim), 0)
    assert_export(local_dest, truth(emulator).only(victim))
