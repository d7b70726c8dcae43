"""`python -m engine run` as a user runs it: real CLI, real processes, real shared memory."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

from connectors.files.sink import read_committed
from engine.shm import segment
from tests.engine_run import (
    KEYS,
    ROOT,
    assert_equals_reference,
    committed,
    engine,
    pipeline_file,
    read_until,
    segments_of,
    start_engine,
    survivors,
    topology_file,
    wait_for_manifest,
    wait_for_pinned_line,
)
from tests.tables import assert_tables_match


@pytest.mark.slow
def test_run_one_two_four_workers_identical_output_equal_to_pyarrow(tmp_path: Path) -> None:
    events, keys = 2_000_000, 1000
    tables = {}
    for workers in ([1], [0, 1], [0, 1, 0, 1]):
        out = tmp_path / f"out-{len(workers)}"
        done = engine(
            "run",
            str(pipeline_file(tmp_path, events, out, keys)),
            "--topology",
            str(topology_file(tmp_path, workers)),
        )
        assert done.returncode == 0, done.stderr
        assert f"done: {events:,} events" in done.stdout
        assert f"{events // 100_000 * keys:,} output rows to {out}" in done.stdout
        tables[len(workers)] = read_committed(out).sort_by(KEYS)
    # float sums follow batch boundaries, which differ by worker count: equal to FLOAT_RTOL
    assert_tables_match(tables[2], tables[1])
    assert_tables_match(tables[4], tables[1])
    got = tables[1]
    assert_equals_reference(got, keys, events)
    assert got.column_names == [
        "window_start",
        "window_end",
        "key",
        "count",
        "sum_value",
        "min_value",
        "max_value",
        "avg_value",
    ]
    assert (
        got.column("window_end").to_numpy() - got.column("window_start").to_numpy() == 1000
    ).all()


def test_run_sigterm_drains_commits_and_rerun_continues_from_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ("run", str(pipeline_file(tmp_path, 0, out)), "--topology")
    proc = start_engine(*args, str(topology_file(tmp_path, [0, 1])))
    children = wait_for_pinned_line(proc)
    assert sorted(children) == ["sink 'out' 0", "source 'events' 0", "worker 0", "worker 1"]
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "stopped by SIGTERM, drained" in stdout
    first = committed(out)
    assert first.num_rows > 0  # what was drained is committed
    epoch = int(re.search(r"last committed epoch (\d+)", stdout).group(1))  # type: ignore[union-attr]
    assert not survivors(children.values())
    assert segments_of([proc.pid, *children.values()]) == set()

    again = start_engine(*args, str(topology_file(tmp_path, [0, 1])))
    started = read_until(again, lambda s: s.startswith("processing again"), "processing again")
    time.sleep(0.3)
    again.send_signal(signal.SIGTERM)
    stdout, stderr = again.communicate(timeout=60)
    stderr = "".join(started) + stderr
    assert again.returncode == 0, stderr
    assert f"recovering from epoch {epoch} ({out}.checkpoints)" in stderr
    assert "stopped by SIGTERM, drained" in stdout
    both = committed(out)
    assert both.num_rows > first.num_rows
    # the rerun read on from the checkpointed offset: no event twice, none lost. A drain
    # flushes open windows, so the window it cut may have a second row: merge before comparing.
    merged = both.group_by(["window_start", "key"], use_threads=False).aggregate(
        [("count", "sum"), ("sum_value", "sum"), ("min_value", "min"), ("max_value", "max")]
    )
    merged = merged.select(
        ["window_start", "key", "count_sum", "sum_value_sum", "min_value_min", "max_value_max"]
    ).rename_columns(["window_start", "key", "count", "sum_value", "min_value", "max_value"])
    assert_equals_reference(merged, keys=1000)


def test_run_worker_killed_without_checkpoints_fails_clearly_and_commits_nothing(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    proc = start_engine(
        "run",
        str(pipeline_file(tmp_path, 0, out, interval_ms=0)),
        "--topology",
        str(topology_file(tmp_path, [0, 1])),
    )
    children = wait_for_pinned_line(proc)
    time.sleep(0.5)
    os.kill(children["worker 1"], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr
    assert f"error: worker 1 (pid {children['worker 1']}) was killed by SIGKILL" in stderr
    assert "restart" not in stderr and "done" not in stdout
    assert committed(out).num_rows == 0  # an unfinished run publishes nothing
    assert not Path(f"{out}.checkpoints").exists()
    assert not survivors(children.values())
    assert segments_of([proc.pid, *children.values()]) == set()


def test_run_worker_killed_with_checkpoints_recovers_to_reference_output(tmp_path: Path) -> None:
    events, out = 5_000_000, tmp_path / "out"
    proc = start_engine(
        "run",
        # paced (about 2 s): the worker is still running when the first manifest is written
        str(pipeline_file(tmp_path, events, out, interval_ms=100, max_rate=2_500_000)),
        "--topology",
        str(topology_file(tmp_path, [0, 1])),
    )
    children = wait_for_pinned_line(proc)
    wait_for_manifest(Path(f"{out}.checkpoints"), proc)
    os.kill(children["worker 1"], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert f"failure: worker 1 (pid {children['worker 1']}) was killed by SIGKILL" in stderr
    assert "restart 1/3" in stderr and "recovering from epoch " in stderr
    assert "recovered 1 time(s)" in stdout
    assert not survivors(children.values())  # the first attempt's children are all gone
    assert_equals_reference(read_committed(out), 1000, events)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s.replace('type = "generator"', 'type = "mqtt"'),
            "unknown source type 'mqtt'; known: generator, nexmark, files",
        ),
        (
            lambda s: s.replace("keys = 1000", "keys = 0"),
            "sources.events.keys=0 must be an integer >= 1",
        ),
        (
            lambda s: s.replace("keys = 1000", "keyz = 10"),
            "sources.events: unknown option 'keyz' (did you mean 'keys'?)",
        ),
        (
            lambda s: s.replace('event_time = "ts"', 'event_time = "when"'),
            "sources.events.event_time: column 'when' is not in its schema",
        ),
        (
            lambda s: s.replace('key = "key"', 'key = "user"'),
            "query.steps[0] (window): column 'user' is not in the input",
        ),
        (
            lambda s: s.replace('"avg(value)"', '"median(value)"'),
            "query.steps[0] (window): 'median(value)' is not an aggregate",
        ),
        (
            lambda s: s.replace('op = "window"', 'op = "window"\nevery = 1'),
            "query.steps[0].every: unknown key",
        ),
        (lambda s: s.replace('op = "window"', 'op = "sort"'), "query.steps[0].op: Invalid value"),
        (
            lambda s: s.replace("[[query.steps]]", "[query]\ncolour = 1\n[[query.steps]]"),
            "query.colour: unknown key",
        ),
        (
            lambda s: s.replace('path = "', 'input = "late"\npath = "'),
            "sinks.out.input: 'late' is not a stream (streams: ['main'])",
        ),
        (
            lambda s: s.replace(
                'name = "test"', 'name = "test"\ndelivery = "exactly-once"'
            ).replace('type = "files"', 'type = "console"'),
            "pipeline.delivery: exactly-once needs exactly-once sinks; sink 'out' (console)",
        ),
        (lambda s: s.replace("[[sinks]]", "[[sinkz]]"), "sinkz: unknown key"),
        (lambda s: s + "\n[[", "not valid TOML"),
    ],
)
def test_validate_bad_pipeline_exits_2_naming_file_and_key(tmp_path: Path, edit, message) -> None:  # type: ignore[no-untyped-def]
    path = pipeline_file(tmp_path, 1000, tmp_path / "o")
    path.write_text(edit(path.read_text()))
    done = engine("validate", str(path), "--topology", str(topology_file(tmp_path, [1])))
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith(f"error: {path}: ") and message in done.stderr


def test_run_topology_with_missing_cpus_refused_unless_oversubscribed(tmp_path: Path) -> None:
    out = tmp_path / "o"
    pipeline = pipeline_file(tmp_path, 100_000, out)
    topo = topology_file(tmp_path, [1, 4096])
    refused = engine("run", str(pipeline), "--topology", str(topo))
    assert refused.returncode == 2
    assert "topology.workers asks for CPU(s) [4096]" in refused.stderr
    assert "--oversubscribe" in refused.stderr
    assert not out.exists()
    shared = engine("run", str(pipeline), "--topology", str(topo), "--oversubscribe")
    assert shared.returncode == 0, shared.stderr
    assert "warning: oversubscribing" in shared.stderr
    assert "done: 100,000 events" in shared.stdout
    assert_equals_reference(read_committed(out), 1000, 100_000)


def test_validate_reports_pipeline_and_topology(tmp_path: Path) -> None:
    topo = topology_file(tmp_path, [1])
    done = engine("validate", str(ROOT / "examples" / "quickstart.toml"), "--topology", str(topo))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: pipeline 'quickstart' (exactly-once, checkpoints every")
    assert "sources events (generator x1, partitioned by ['key']) -> 1 worker(s)" in done.stdout
    assert "1 worker(s) on [1], rings of 4194304 bytes" in done.stdout


def test_run_env_override_changes_window_and_checkpoint_keys(tmp_path: Path) -> None:
    out = tmp_path / "env"
    env = {
        **os.environ,
        "RINGSTREAM_SOURCES__0__EVENTS": "200000",
        "RINGSTREAM_QUERY__STEPS__0__WINDOW__SIZE_MS": "500",
        "RINGSTREAM_CHECKPOINT__DIR": str(tmp_path / "ck"),
    }
    done = engine(
        "run",
        str(pipeline_file(tmp_path, 1000, out)),
        "--topology",
        str(topology_file(tmp_path, [1])),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "done: 200,000 events" in done.stdout
    got = read_committed(out)
    assert got.num_rows == 4 * 1000  # 2 s of event time in 500 ms windows, 1000 keys
    assert int(pc.sum(got["count"]).as_py()) == 200_000
    assert any((tmp_path / "ck").glob("epoch-*.manifest"))
    assert not Path(f"{out}.checkpoints").exists()


def test_run_coordinator_killed_children_follow_and_next_run_sweeps(tmp_path: Path) -> None:
    proc = start_engine(
        "run",
        str(pipeline_file(tmp_path, 0, tmp_path / "out")),
        "--topology",
        str(topology_file(tmp_path, [0, 1])),
    )
    children = wait_for_pinned_line(proc)
    owned = segments_of([proc.pid])
    assert len(owned) == 5  # 2 source->worker rings, 2 worker->sink rings, counters
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and survivors(children.values()):
        time.sleep(0.1)
    assert not survivors(children.values())
    done = engine(
        "run",
        str(pipeline_file(tmp_path, 10_000, tmp_path / "out2", name="second.toml")),
        "--topology",
        str(topology_file(tmp_path, [1])),
    )
    assert done.returncode == 0, done.stderr
    assert owned.isdisjoint(segment.list_segments())


def test_rows_the_final_stage_drops_are_counted_in_the_summary(tmp_path: Path) -> None:
    """A final window (in the sink process) drops the rows with a null event time: the
    run's summary counts them as it counts a worker's, and with the rows it counted they
    make up every event; a late_output there (no stream leaves a sink) is refused."""
    import json

    out = tmp_path / "out"
    p = tmp_path / "p.toml"
    text = f"""
[pipeline]
name = "final_drops"
[checkpoint]
interval_ms = 0
[[sources]]
name = "e"
type = "generator"
events = 10000
keys = 10
event_time = "ts"
[[query.steps]]
op = "project"
columns = ["ts", "key", "case when key % 2 = 0 then ts else null end as t2"]
[[query.final]]
op = "window"
window = {{ type = "tumbling", size_ms = 100 }}
aggregates = ["count"]
time = "t2"
[[sinks]]
name = "out"
type = "files"
path = "{out}"
format = "parquet"
"""
    p.write_text(text)
    done = engine("run", str(p), "--log-format", "json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    counted = sum(read_committed(out).column("count").to_pylist())
    assert summary["null_time_rows"] > 0 and counted > 0
    assert summary["null_time_rows"] + counted == 10000, summary
    p.write_text(text.replace('time = "t2"', 'time = "t2"\nlate_output = "late"'))
    refused = engine("validate", str(p))
    assert refused.returncode == 2 and "query.final[0].late_output" in refused.stderr
