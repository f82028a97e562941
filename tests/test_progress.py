"""Progress bars: on a terminal (a pseudo-terminal here) stderr shows the flows read,
the records, and the day file being merged; on a pipe or file, as under cron or ECS,
none."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess

from conftest import EXPORT_BIN, assert_exit, export, export_env, run_args

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_on_a_terminal(args: list[str], env: dict) -> tuple[int, str, str]:
    """Runs the exporter with stderr on a pseudo-terminal; returns (code, stdout, terminal)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(EXPORT_BIN), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave, env=export_env(env))
    os.close(slave)
    screen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    stdout = proc.stdout.read().decode()
    return proc.wait(30), stdout, _ANSI.sub("", screen.decode(errors="replace"))


def test_a_terminal_shows_progress(emulator, local_dest):
    args, env = run_args(emulator, local_dest)
    backfill = ["backfill", *args[1:], "--since", "2020-01-01"]
    code, stdout, screen = run_on_a_terminal(backfill, {**env, "RUST_LOG": "error", "TERM": "xterm-256color"})
    assert code == 0, stdout + screen
    flows = len(emulator.flow_names())
    assert re.search(rf"reading\s+\[=+\]\s+{flows}/{flows} flows, \d+ records", screen), screen[-2000:]
    days = re.findall(r"merging\s+\[[=> ]+\]\s+(\d+)/(\d+) day files, dt=(\d{4}-\d\d-\d\d) \d+_[a-z0-9-]+", screen)
    assert days and days[-1][0] == days[-1][1], screen[-2000:]


def test_a_dumb_terminal_shows_none(emulator, local_dest):
    args, env = run_args(emulator, local_dest)
    code, stdout, screen = run_on_a_terminal(args, {**env, "RUST_LOG": "error", "TERM": "dumb"})
    assert code == 0, stdout + screen
    assert "reading" not in screen and "merging" not in screen, screen[-2000:]


def test_a_pipe_shows_none(emulator, local_dest):
    result = export(emulator, local_dest)
    assert_exit(result, 0)
    assert "reading" not in result.stderr and "merging" not in result.stderr
