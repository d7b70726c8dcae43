"""How a run starts and stops as users and service managers start and stop it.

A signal to the whole process group (Ctrl-C in a shell, systemd, ``timeout``,
``kill -- -PGID``) drains like a signal to the coordinator alone; a reader that
goes away (``| tee log`` then Ctrl-C) is no error; a second run on a checkpoint
directory in use is refused at once, naming the pid that holds it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine_run import (
    ROOT,
    committed,
    pipeline_file,
    read_until,
    segments_of,
    survivors,
    topology_file,
    wait_for_manifest,
    wait_for_pinned_line,
)


def start_in_own_group(*args: str, **kw) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    return subprocess.Popen(
        [sys.executable, "-m", "engine", *args], cwd=ROOT, text=True,
        stdout=kw.pop("stdout", subprocess.PIPE), stderr=subprocess.PIPE,
        start_new_session=True, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_process_group_drains_exit_0_last_epoch_committed(
    tmp_path: Path, sig: signal.Signals
) -> None:
    out = tmp_path / "out"
    pipeline = pipeline_file(tmp_path, 0, out, interval_ms=200)
    proc = start_in_own_group("run", str(pipeline), "--topology", str(topology_file(tmp_path, [1])))
    children = wait_for_pinned_line(proc)
    wait_for_manifest(Path(f"{out}.checkpoints"), proc)
    os.killpg(proc.pid, sig)  # the coordinator and every child at once
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert f"stopped by {sig.name}, drained" in stdout
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    last = int(re.search(r"last committed epoch (\d+)", stdout).group(1))  # type: ignore[union-attr]
    assert last >= 1 and committed(out).num_rows > 0
    assert not survivors(children.values())
    assert segments_of([proc.pid, *children.values()]) == set()


def test_signal_to_the_group_while_children_start_stops_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "out"
    pipeline = pipeline_file(tmp_path, 0, out)
    proc = start_in_own_group("run", str(pipeline), "--topology", str(topology_file(tmp_path, [1])))
    read_until(proc, lambda s: s.startswith("running "), "the run to start")
    time.sleep(0.05)  # children are being spawned and import pyarrow now
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "stopped by SIGINT" in stdout


def test_ctrl_c_with_output_piped_to_tee_exits_0_without_broken_pipe(tmp_path: Path) -> None:
    out = tmp_path / "out"
    pipeline = pipeline_file(tmp_path, 0, out, interval_ms=200)
    topo = topology_file(tmp_path, [1])
    err, rc = tmp_path / "err", tmp_path / "rc"
    shell = (  # a shell that outlives Ctrl-C to tell the engine's exit status
        f"trap true INT; {sys.executable} -m engine run {pipeline} --topology {topo} 2> {err} "
        f"| tee {tmp_path / 'log'}; echo ${{PIPESTATUS[0]}} > {rc}"
    )
    proc = subprocess.Popen(["bash", "-c", shell], cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 60
    while not any(Path(f"{out}.checkpoints").glob("epoch-*.manifest")):
        assert time.monotonic() < deadline and proc.poll() is None, err.read_text()
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: tee dies at once, the engine drains
    assert proc.wait(60) == 0
    stderr = err.read_text()
    assert rc.read_text().strip() == "0", stderr
    assert "BrokenPipeError" not in stderr and "Traceback" not in stderr, stderr
    assert committed(out).num_rows > 0


def test_second_run_on_the_same_checkpoint_dir_is_refused_naming_the_pid(tmp_path: Path) -> None:
    out = tmp_path / "out"
    pipeline = pipeline_file(tmp_path, 0, out)
    topo = str(topology_file(tmp_path, [1]))
    first = start_in_own_group("run", str(pipeline), "--topology", topo)
    wait_for_pinned_line(first)
    try:
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "engine", "run", str(pipeline), "--topology", topo],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert f"in use by a running pipeline (pid {first.pid})" in second.stderr
        assert time.monotonic() - started < 30
        assert "recovering" not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        stdout, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    again = subprocess.run(  # the lock went with the first run: a third run may resume
        [sys.executable, "-m", "engine", "run", str(pipeline), "--topology", topo],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "RINGSTREAM_SOURCES__0__EVENTS": "1"},
    )  # fmt: skip
    assert "in use by a running pipeline" not in again.stderr
