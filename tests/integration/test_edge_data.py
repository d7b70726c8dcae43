"""Edge data and messages: every dropped row counted and shown; deterministic failures caught
by ``validate``; config mistakes answered with a clean exit 2.

Seen before: rows with event time INT64_MAX/INT64_MIN vanished from windows uncounted,
null-time rows were counted but never shown, ``sinks.path = 1`` and a ring too small for
a schema failed only in a child after restarts, ``kind = {}`` gave a raw TypeError.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from connectors.files.committed import read_committed
from tests.engine_run import ROOT, topology_file

I64_MAX, I64_MIN = 2**63 - 1, -(2**63)


def engine(
    tmp_path: Path, command: str, text: str, capacity: int = 0
) -> subprocess.CompletedProcess[str]:
    p = tmp_path / "p.toml"
    p.write_text(text)
    topo = topology_file(tmp_path, [1])
    if capacity:
        topo.write_text(topo.read_text().replace("capacity = 4194304", f"capacity = {capacity}"))
    return subprocess.run(
        [sys.executable, "-m", "engine", command, str(p), "--topology", str(topo)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip


def test_extreme_and_null_event_times_are_counted_and_shown_other_windows_exact(
    tmp_path: Path,
) -> None:
    ts = [1_000, 1_500, 2_100, I64_MAX, I64_MIN, None, 2_900, I64_MAX - 5, 3_000]
    key = ["a", "b", "a", "a", "b", "a", "b", "b", "a"]
    data = pa.table({"ts": pa.array(ts, pa.int64()), "key": key, "v": list(range(len(ts)))})
    (tmp_path / "in").mkdir()
    pa.parquet.write_table(data, tmp_path / "in" / "x.parquet")
    done = engine(
        tmp_path,
        "run",
        f"""
[checkpoint]
dir = "{tmp_path / "ckpt"}"
[[sources]]
name = "s"
type = "files"
path = "{tmp_path / "in"}"
event_time = "ts"
[[query.steps]]
op = "window"
key = "key"
window = {{ type = "tumbling", size_ms = 1000 }}
aggregates = ["count", "sum(v)"]
[[sinks]]
name = "out"
type = "files"
path = "{tmp_path / "out"}"
""",
    )
    assert done.returncode == 0, done.stderr
    assert "3 rows with an event time out of range dropped" in done.stdout
    assert "1 rows with a null event time or join key dropped" in done.stdout
    got = read_committed(tmp_path / "out").sort_by(
        [("window_start", "ascending"), ("key", "ascending")]
    )
    con = duckdb.connect()
    con.register("t", data)
    want = con.execute(
        f"SELECT ts - ts % 1000 AS ws, key, count(*) AS n, sum(v) AS s FROM t "
        f"WHERE ts BETWEEN {-(2**62)} AND {2**62 - 1} GROUP BY ALL ORDER BY ws, key"
    ).fetchall()
    cols = ("window_start", "key", "count", "sum_v")
    assert list(zip(*(got.column(c).to_pylist() for c in cols), strict=True)) == want
    assert pc.sum(got.column("count")).as_py() == 5


BASE = """
[[sources]]
name = "bids"
type = "nexmark"
kind = "bid"
events = 1000
event_time = "date_time"
[[sinks]]
name = "out"
type = "files"
path = "{out}"
"""


def test_validate_catches_a_sink_option_of_the_wrong_type(tmp_path: Path) -> None:
    text = BASE.format(out=tmp_path / "out").replace(f'path = "{tmp_path / "out"}"', "path = 1")
    done = engine(tmp_path, "validate", text)
    assert done.returncode == 2
    assert "sinks.out.path=1 must be a non-empty string" in done.stderr
    assert done.stderr.count("\n") == 1  # one clean line, no traceback


def test_validate_catches_a_ring_too_small_for_the_schema(tmp_path: Path) -> None:
    done = engine(tmp_path, "validate", BASE.format(out=tmp_path / "out"), capacity=1024)
    assert done.returncode == 2, done.stdout
    assert "rings.capacity=1024 is too small for sources.bids" in done.stderr
    assert "use rings.capacity = " in done.stderr


def test_a_table_where_a_string_belongs_is_a_clean_exit_2(tmp_path: Path) -> None:
    text = BASE.format(out=tmp_path / "out").replace('kind = "bid"', "kind = {}")
    done = engine(tmp_path, "validate", text)
    assert done.returncode == 2
    assert "sources.bids.kind={} must be one of 'auction', 'bid', 'person'" in done.stderr


def test_late_output_without_a_sink_is_refused(tmp_path: Path) -> None:
    text = (
        BASE.format(out=tmp_path / "out")
        + """
[[query.steps]]
op = "window"
key = "auction"
window = { type = "tumbling", size_ms = 1000 }
aggregates = ["count"]
late_output = "late"
"""
    )
    done = engine(tmp_path, "validate", text)
    assert done.returncode == 2
    assert "late_output 'late' has no sink: its late rows would be lost" in done.stderr


def test_dead_letter_without_a_sink_is_refused(tmp_path: Path) -> None:
    text = BASE.format(out=tmp_path / "out").replace(
        'kind = "bid"', 'kind = "bid"\non_error = "dead_letter"'
    )
    done = engine(tmp_path, "validate", text)
    assert done.returncode == 2
    assert "'dead_letter', which no sink reads" in done.stderr
