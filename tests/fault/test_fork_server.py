"""The fork server that starts every child: its death is a failure the run recovers from.

Killing it kills every child it forked (their ``PR_SET_PDEATHSIG``); the coordinator
sees them die, restarts from the last checkpoint with a new server, and the committed
output is still every window exactly once.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil

from tests.engine_run import (
    assert_equals_reference,
    committed,
    pipeline_file,
    start_engine,
    topology_file,
    wait_for_pinned_line,
)

EVENTS, KEYS = 10_000_000, 500  # about 1 s of run: the kill lands in it


def fork_server(coordinator: int) -> psutil.Process:
    for p in psutil.Process(coordinator).children():
        if "multiprocess.forkserver" in " ".join(p.cmdline()):
            return p
    raise AssertionError("the coordinator has no fork server")


def test_a_killed_fork_server_takes_its_children_and_the_run_recovers(tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = pipeline_file(tmp_path, EVENTS, out, keys=KEYS, interval_ms=100)
    proc = start_engine("run", str(p), "--topology", str(topology_file(tmp_path, [1])))
    children = wait_for_pinned_line(proc)
    server = fork_server(proc.pid)
    time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the fork server could be killed"
    server.send_signal(signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    assert "recovered 1 time" in stdout, stdout
    for pid in children.values():  # every child of the first server died with it
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert "fork server" in stderr, stderr  # the failure says how the children were lost
    assert_equals_reference(committed(out), KEYS, EVENTS)
