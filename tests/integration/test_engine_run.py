"""`python -m engine run` as a user runs it: real CLI, real processes, real shared memory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.generator import generate
from engine.shm import segment

ROOT = Path(__file__).resolve().parents[2]
KEYS = [("window_start", "ascending"), ("key", "ascending")]


def pipeline_file(tmp_path: Path, events: int, out: Path, keys: int = 1000) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(f"""
[pipeline]
name = "test"

[checkpoint]
dir = "{out}.checkpoints"

[[sources]]
name = "events"
type = "generator"
event_time = "ts"
events = {events}
keys = {keys}
batch_rows = 16384
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
    batch = generate(seed=7, start=0, stop=events, keys=keys, events_per_second=100000)
    ts = batch.column("ts").to_numpy()
    t = pa.table(batch).append_column("window_start", pa.array(ts - ts % 1000))
    return (
        t.group_by(["window_start", "key"])
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


def our_segments() -> set[str]:
    return set(segment.list_segments())


def wait_for_pinned_line(proc: subprocess.Popen) -> dict[str, int]:  # type: ignore[type-arg]
    """Read stderr until the coordinator reports its pinned children; return label -> pid."""
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line.startswith("pinned: "):
            return {
                f"{m[0]} {m[1]}": int(m[2])
                for m in re.findall(r"(\w+) (?:'[^']*' )?(\d+) pid (\d+) cpu \d+", line)
            }
        if not line and proc.poll() is not None:
            break
    raise AssertionError("the engine never reported its pinned children")


@pytest.mark.slow
def test_run_one_two_four_workers_identical_output_equal_to_pyarrow(tmp_path: Path) -> None:
    events, keys = 2_000_000, 1000
    ref = expected(events, keys)
    tables = {}
    for workers in ([1], [0, 1], [0, 1, 0, 1]):
        out = tmp_path / f"out-{len(workers)}.parquet"
        done = engine(
            "run",
            str(pipeline_file(tmp_path, events, out, keys)),
            "--topology",
            str(topology_file(tmp_path, workers)),
        )
        assert done.returncode == 0, done.stderr
        assert f"done: {events:,} events" in done.stdout
        tables[len(workers)] = pq.read_table(out).sort_by(KEYS)
    assert tables[1].equals(tables[2]) and tables[1].equals(tables[4])
    got = tables[1]
    assert got.column("key").equals(ref.column("key"))
    assert got.column("window_start").equals(ref.column("window_start"))
    assert got.column("count").equals(ref.column("count_all"))
    for ours, theirs in (
        ("sum_value", "value_sum"),
        ("min_value", "value_min"),
        ("max_value", "value_max"),
        ("avg_value", "value_mean"),
    ):
        np.testing.assert_allclose(
            got.column(ours).to_numpy(), ref.column(theirs).to_numpy(), rtol=1e-12
        )
    assert (
        got.column("window_end").to_numpy() - got.column("window_start").to_numpy() == 1000
    ).all()


def test_run_sigterm_mid_run_drains_and_leaves_no_process_or_segment(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    before = our_segments()
    proc = start_engine(
        "run",
        str(pipeline_file(tmp_path, 0, out)),
        "--topology",
        str(topology_file(tmp_path, [0, 1])),
    )
    children = wait_for_pinned_line(proc)
    assert sorted(children) == ["sink 0", "source 0", "worker 0", "worker 1"]
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "stopped by SIGTERM, drained" in stdout
    assert pq.read_table(out).num_rows > 0  # what was drained is published
    assert not survivors(children.values())
    assert our_segments() - before == set()


def test_run_child_killed_fails_with_clear_error_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    before = our_segments()
    proc = start_engine(
        "run",
        str(pipeline_file(tmp_path, 0, out)),
        "--topology",
        str(topology_file(tmp_path, [0, 1])),
    )
    children = wait_for_pinned_line(proc)
    time.sleep(0.5)
    os.kill(children["worker 1"], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"worker 1 (pid {children['worker 1']}) was killed by SIGKILL" in stderr
    assert not out.exists()  # an unfinished run publishes nothing
    assert not survivors(children.values())
    assert our_segments() - before == set()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s.replace('type = "generator"', 'type = "kafka"'),
            "sources[0].type: Invalid value 'kafka'",
        ),
        (lambda s: s.replace("keys = 1000", "keys = 0"), "sources[0].keys: Expected `int` >= 1"),
        (
            lambda s: s.replace('key = "key"', 'key = "user"'),
            "query: column 'user' is not in the input",
        ),
        (
            lambda s: s.replace('"avg(value)"', '"median(value)"'),
            "query.aggregates[4]: 'median(value)' is not an aggregate",
        ),
        (lambda s: s.replace("[query]", "[query]\ncolour = 1"), "query.colour"),
        (lambda s: s.replace("[[sinks]]", "[[sinkz]]"), "sinkz"),
        (lambda s: s + "\n[[", "not valid TOML"),
    ],
)
def test_validate_bad_pipeline_exits_2_naming_file_and_key(tmp_path: Path, edit, message) -> None:  # type: ignore[no-untyped-def]
    path = pipeline_file(tmp_path, 1000, tmp_path / "o.parquet")
    path.write_text(edit(path.read_text()))
    done = engine("validate", str(path), "--topology", str(topology_file(tmp_path, [1])))
    assert done.returncode == 2
    assert str(path) in done.stderr and message in done.stderr


def test_run_topology_with_missing_cpus_refused_unless_oversubscribed(tmp_path: Path) -> None:
    pipeline = pipeline_file(tmp_path, 100_000, tmp_path / "o.parquet")
    topo = topology_file(tmp_path, [1, 4096])
    refused = engine("run", str(pipeline), "--topology", str(topo))
    assert refused.returncode == 2
    assert "topology.workers asks for CPU(s) [4096]" in refused.stderr
    assert "--oversubscribe" in refused.stderr
    shared = engine("run", str(pipeline), "--topology", str(topo), "--oversubscribe")
    assert shared.returncode == 0, shared.stderr
    assert "warning: oversubscribing" in shared.stderr
    assert "done: 100,000 events" in shared.stdout


def test_validate_reports_pipeline_and_topology(tmp_path: Path) -> None:
    done = engine("validate", str(ROOT / "examples" / "quickstart.toml"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: pipeline 'quickstart'")


def test_run_env_override_changes_a_key(tmp_path: Path) -> None:
    out = tmp_path / "env.parquet"
    env = {
        **os.environ,
        "RINGSTREAM_SOURCES__0__EVENTS": "50000",
        "RINGSTREAM_SINKS__0__PATH": str(out),
    }
    done = engine(
        "run",
        str(ROOT / "examples" / "quickstart.toml"),
        "--topology",
        str(topology_file(tmp_path, [1])),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "done: 50,000 events" in done.stdout and out.exists()


def test_run_coordinator_killed_children_follow_and_next_run_sweeps(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    proc = start_engine(
        "run",
        str(pipeline_file(tmp_path, 0, out)),
        "--topology",
        str(topology_file(tmp_path, [0, 1])),
    )
    children = wait_for_pinned_line(proc)
    owned = {n for n in segment.list_segments() if segment.owner_pid(n) == proc.pid}
    assert len(owned) == 5  # 2 source->worker rings, 2 worker->sink rings, counters
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in children.values()):
        time.sleep(0.1)
    assert not survivors(children.values())
    done = engine(
        "run",
        str(pipeline_file(tmp_path, 10_000, out)),
        "--topology",
        str(topology_file(tmp_path, [1])),
    )
    assert done.returncode == 0, done.stderr
    assert owned.isdisjoint(segment.list_segments())
