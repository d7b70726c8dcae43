"""Running ``python -m engine run`` as a user runs it, for tests: files, processes, checks.

``pipeline_file`` writes a generator -> 1 s tumbling windows -> files pipeline;
``engine``/``start_engine`` run the CLI; ``expected``/``assert_equals_reference``
compute the same windows with pyarrow; the rest waits for lines, pinned children,
manifests, and checks that no child or segment outlives a run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc

from connectors.files.committed import read_committed
from connectors.generator import generate
from engine.shm import segment

ROOT = Path(__file__).resolve().parents[1]
KEYS = [("window_start", "ascending"), ("key", "ascending")]
AGGREGATES = [  # ours -> pyarrow's, over the same groups
    ("sum_value", "value_sum"),
    ("min_value", "value_min"),
    ("max_value", "value_max"),
    ("avg_value", "value_mean"),
]


def pipeline_file(
    tmp_path: Path,
    events: int,
    out: Path,
    keys: int = 1000,
    interval_ms: int = 1000,
    name: str = "pipeline.toml",
    max_rate: int = 0,
) -> Path:
    """generator -> 1 s tumbling windows per key -> files at ``out`` (checkpoints beside it)."""
    path = tmp_path / name
    path.write_text(f"""
[pipeline]
name = "test"

[checkpoint]
dir = "{out}.checkpoints"
interval_ms = {interval_ms}

[[sources]]
name = "events"
type = "generator"
event_time = "ts"
events = {events}
keys = {keys}
batch_rows = 16384
max_rate = {max_rate}
seed = 7
events_per_second = 100000

[[query.steps]]
op = "window"
key = "key"
window = {{ type = "tumbling", size_ms = 1000 }}
aggregates = ["count", "sum(value)", "min(value)", "max(value)", "avg(value)"]

[[sinks]]
name = "out"
type = "files"
path = "{out}"
""")
    return path


def topology_file(tmp_path: Path, workers: list[int], name: str = "topology.toml") -> Path:
    path = tmp_path / name
    path.write_text(
        f"[topology]\ncoordinator = 0\nconnectors = [0]\nworkers = {workers}\n"
        "[rings]\ncapacity = 4194304\n"
    )
    return path


def engine(*args: str, **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=kw.pop("timeout", 180),
        **kw,
    )


def start_engine(*args: str) -> subprocess.Popen:  # type: ignore[type-arg]
    return subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def expected(events: int, keys: int) -> pa.Table:
    """The windows of the first ``events`` events, computed by pyarrow, sorted by KEYS."""
    batch = generate(seed=7, start=0, stop=events, keys=keys, events_per_second=100000)
    ts = batch.column("ts").to_numpy()
    t = pa.table(batch).append_column("window_start", pa.array(ts - ts % 1000))
    return (
        t.group_by(["window_start", "key"], use_threads=False)
        .aggregate(
            [
                ([], "count_all"),
                ("value", "sum"),
                ("value", "min"),
                ("value", "max"),
                ("value", "mean"),
            ]
        )
        .sort_by(KEYS)
    )


def assert_equals_reference(got: pa.Table, keys: int, events: int | None = None) -> None:
    """``got`` (any order) holds exactly the windows of the first ``events`` events."""
    got = got.sort_by(KEYS)
    if events is None:
        events = int(pc.sum(got["count"]).as_py())
    assert 0 < events < 100_000_000, f"{events} events: not a count column"
    ref = expected(events, keys)
    assert got.num_rows == ref.num_rows
    assert got.column("key").equals(ref.column("key"))
    assert got.column("window_start").equals(ref.column("window_start"))
    assert got.column("count").equals(ref.column("count_all"))
    for ours, theirs in AGGREGATES:
        if ours in got.column_names:
            np.testing.assert_allclose(
                got.column(ours).to_numpy(), ref.column(theirs).to_numpy(), rtol=1e-9
            )


def committed(out: Path) -> pa.Table:
    """What the files sink at ``out`` committed (empty when it never created ``out``)."""
    return read_committed(out) if out.exists() else pa.table({})


def survivors(pids: Iterable[int]) -> list[int]:
    """The pids that still run (a zombie has exited: only its parent has not reaped it)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def segments_of(pids: Iterable[int]) -> set[str]:
    """The segments whose header names one of ``pids`` as owner (other runs' are not ours)."""
    owners = set(pids)
    return {n for n in segment.list_segments() if segment.owner_pid(n) in owners}


def read_until(proc: subprocess.Popen, found: Callable[[str], bool], what: str) -> list[str]:  # type: ignore[type-arg]
    """Read the engine's stderr until a line satisfies ``found``; return the lines read."""
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines.append(proc.stderr.readline())
        if found(lines[-1]):
            return lines
        if not lines[-1] and proc.poll() is not None:
            break
    raise AssertionError(f"the engine never reported {what}: {''.join(lines)}")


def wait_for_pinned_line(proc: subprocess.Popen) -> dict[str, int]:  # type: ignore[type-arg]
    """Label ("source 'events' 0", "worker 1", "sink 'out' 0") -> pid of each pinned child."""
    line = read_until(proc, lambda s: s.startswith("pinned: "), "its pinned children")[-1]
    return {
        label: int(pid)
        for label, pid in re.findall(
            r"((?:source|worker|sink)(?: '[^']*')? \d+) pid (\d+) cpu \d+", line
        )
    }


def wait_for_manifest(checkpoints: Path, proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + 60
    while not any(checkpoints.glob("epoch-*.manifest")):
        assert proc.poll() is None, "the engine ended before its first checkpoint"
        assert time.monotonic() < deadline, f"no manifest in {checkpoints}"
        time.sleep(0.005)
