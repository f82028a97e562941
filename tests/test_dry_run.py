"""`run --dry-run`: the flows a run would export and where each read would stop,
with no write and no run history read."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from pathlib import Path

from conftest import LocalDest, assert_exit, export, truth

HOUR, DAY = 3_600_000, 86_400_000
OPEN = {"InProgress", "CancelStarted"}


def listed(stdout: str) -> dict[str, tuple[str, str]]:
    """Flow -> (watermark, reads back to) from the dry run's table."""
    lines = stdout.splitlines()
    assert lines[0].startswith("dry run: would export ") and "nothing is written" in lines[0], stdout
    assert lines[1].split() == ["FLOW", "WATERMARK", "READS", "BACK", "TO"]
    rows = {}
    for line in lines[2:]:
        name, watermark, reads_to = line.split(maxsplit=2)
        rows[name] = (watermark, reads_to)
    return rows


def iso_ms(text: str) -> int:
    return round(dt.datetime.fromisoformat(text).timestamp() * 1000)


def tree(dest) -> dict[str, str]:
    """Every object of the destination, `_state/` included, with its content hash."""
    if dest.kind == "local":
        return {p.relative_to(dest.path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in dest.path.rglob("*") if p.is_file()}
    return {o["Key"]: o["ETag"] for o in dest.objects()}


def test_dry_run_on_a_new_destination_writes_nothing(emulator, tmp_path):
    dest = LocalDest(tmp_path / "not-yet")
    emulator.reset_counters()
    result = export(emulator, dest, "--dry-run")
    assert_exit(result, 0)
    rows = listed(result.stdout)
    assert set(rows) == set(emulator.flow_names())
    assert all(r == ("-", "(whole history: never exported)") for r in rows.values())
    assert not Path(dest.path).exists(), "the dry run created the destination"
    calls = emulator.counters()["operations"]
    assert set(calls) == {"ListFlows"}, calls


def test_dry_run_after_an_export_shows_each_cutoff(emulator, dest):
    assert_exit(export(emulator, dest), 0)
    before_tree = tree(dest)
    emulator.reset_counters()
    before = int(time.time() * 1000)
    result = export(emulator, dest, "--dry-run")
    after = int(time.time() * 1000)
    assert_exit(result, 0)
    assert tree(dest) == before_tree
    assert set(emulator.counters()["operations"]) == {"ListFlows"}

    data = truth(emulator)
    rows = listed(result.stdout)
    assert set(rows) == set(emulator.flow_names())
    for name, (watermark, reads_to) in rows.items():
        runs = [r for r in data.executions.values() if r["flow_name"] == name]
        newest = max(r["started_at"] for r in runs)
        oldest_open = min((r["started_at"] for r in runs if r["execution_status"] in OPEN), default=None)

        def cutoff(now: int) -> int:
            held = newest if oldest_open is None else min(newest, max(oldest_open, now - 7 * DAY))
            return held - HOUR

        assert iso_ms(watermark) == newest, name
        got = iso_ms(reads_to)
        assert cutoff(before) <= got <= cutoff(after), (name, reads_to)
    # The data has flows held back by an open run and flows that are not.
    assert any(iso_ms(w) - HOUR != iso_ms(r) for w, r in rows.values())
    assert any(iso_ms(w) - HOUR == iso_ms(r) for w, r in rows.values())


def test_dry_run_of_a_shard_lists_its_flows_only(emulator, local_dest):
    from test_shard import owned
    result = export(emulator, local_dest, "--dry-run", "--shard", "1/2")
    assert_exit(result, 0)
    assert set(listed(result.stdout)) == owned(emulator, 1, 2)
    assert f"(shard 1/2 of {len(emulator.flow_names())} selected flows)" in result.stdout


def test_dry_run_of_a_missing_flow_fails_like_the_run(emulator, local_dest):
    result = export(emulator, local_dest, "--dry-run", "--flows", f"{emulator.flow_names()[0]},no-such-flow")
    assert_exit(result, 1)
    assert "no-such-flow" in result.stdout and "no-such-flow" in result.stderr
    assert set(listed_lines(result.stdout)) == {emulator.flow_names()[0]}
    assert not list(local_dest.path.rglob("*"))


def listed_lines(stdout: str) -> list[str]:
    return [line.split()[0] for line in stdout.splitlines()[2:] if not line.strip().startswith("not exported")]
