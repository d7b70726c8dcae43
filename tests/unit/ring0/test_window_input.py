""" "input" windows: a final stage merging per-worker results of the same windows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ring0.operators.window import WindowAggregate, WindowSpec
from tests.unit.ring0.test_window import SCHEMA, aggs, consolidate, drive, resumed, rows

INPUT = WindowSpec("input")


def worker_outputs(spec: WindowSpec, seed: int = 3, schema: pa.Schema = SCHEMA) -> list:
    """Two workers, each with its own key partition, each emitting per-key windows."""
    rng = np.random.default_rng(seed)
    n = 400
    ts, key, value = rng.integers(-100, 300, n), rng.integers(0, 10, n), rng.integers(0, 1000, n)
    whole = pa.table(
        {"ts": pa.array(ts).cast(schema.field("ts").type), "key": key, "value": value},
        schema=schema,
    )
    out = []
    for part in (0, 1):
        mine = whole.filter(pa.array(key % 2 == part)).to_batches(max_chunksize=50)
        op = WindowAggregate(["key"], "ts", spec, aggs("count", "max(value)", "sum(value)"), schema)
        out.append(drive(op, [*mine, 100]))
    global_op = WindowAggregate([], "ts", spec, aggs("count", "max(value)", "sum(value)"), schema)
    expected = drive(global_op, whole.to_batches(max_chunksize=50))
    return out + [expected]


@pytest.mark.parametrize(
    "spec", [WindowSpec("tumbling", size_ms=50), WindowSpec("hopping", size_ms=60, slide_ms=20)]
)
def test_input_windows_merge_per_worker_results_into_the_global_result(spec: WindowSpec) -> None:
    first, second, expected = worker_outputs(spec)
    final = WindowAggregate(
        [],
        "window_end",
        INPUT,
        aggs("sum(count) as count", "max(max_value) as max_value", "sum(sum_value) as sum_value"),
        first[0].schema,
    )
    merged = drive(final, [*first, *second])
    assert rows(merged) == rows(expected)


def test_input_windows_close_when_watermark_reaches_window_end_in_end_order() -> None:
    first, second, _ = worker_outputs(WindowSpec("tumbling", size_ms=50))
    final = WindowAggregate([], "window_end", INPUT, aggs("sum(count) as n"), first[0].schema)
    for b in first + second:
        final.process(b)
    closed = rows(final.on_watermark(100))
    assert [r["window_end"] for r in closed] == [-50, 0, 50, 100]
    ends = pa.Table.from_batches(final.finish()).column("window_end").to_pylist()
    assert ends == sorted(ends) and ends[0] == 150


def test_input_windows_keep_timestamp_types_and_key_columns() -> None:
    schema = pa.schema([("ts", pa.timestamp("us")), ("key", pa.int64()), ("value", pa.int64())])
    first, second, _ = worker_outputs(WindowSpec("tumbling", size_ms=50), schema=schema)
    assert first[0].schema.field("window_start").type == pa.timestamp("ms")
    final = WindowAggregate(
        ["key"], "window_end", INPUT, aggs("sum(count) as n"), first[0].schema, emit="update"
    )
    out = drive(final, [*first, *second])
    assert final.output_schema.field("window_end").type == pa.timestamp("ms")
    assert final.output_schema.names == ["window_start", "window_end", "key", "n", "_change"]
    per_key = {(r["window_start"], r["key"]): r["count"] for r in rows(first + second)}
    assert {(r["window_start"], r["key"]): r["n"] for r in consolidate(out)} == per_key


def test_input_windows_row_of_a_closed_window_is_late() -> None:
    schema = pa.schema(
        [("window_start", pa.int64()), ("window_end", pa.int64()), ("count", pa.int64())]
    )

    def rows_of(ends: list[int]) -> pa.RecordBatch:
        return pa.record_batch(
            {"window_start": [e - 10 for e in ends], "window_end": ends, "count": [1] * len(ends)},
            schema=schema,
        )

    final = WindowAggregate(
        [],
        "window_end",
        INPUT,
        aggs("sum(count) as n"),
        schema,
        allowed_lateness_ms=5,
        keep_late=True,
    )
    out = drive(final, [rows_of([10, 20]), 24, rows_of([10, 20, 30]), 25, rows_of([20, 30])])
    # wm 24 closes the window ending 10 (10 + 5 <= 24), wm 25 the one ending 20
    assert [(r["window_end"], r["n"]) for r in rows(out)] == [(10, 1), (20, 2), (30, 2)]
    assert final.late_rows == 2
    assert [b.column("window_end").to_pylist() for b in final.take_late()] == [[10], [20]]


@pytest.mark.parametrize("cut", [1, 3])
def test_input_windows_snapshot_restore_mid_stream_gives_identical_output(cut: int) -> None:
    first, second, _ = worker_outputs(WindowSpec("hopping", size_ms=60, slide_ms=20))
    steps = [first[0], second[0], 0, *first[1:], 100, *second[1:]]

    def make() -> WindowAggregate:
        return WindowAggregate(
            [], "window_end", INPUT, aggs("max(max_value) as m"), first[0].schema, keep_late=True
        )

    assert rows(resumed(make, steps, cut)) == rows(drive(make(), steps))
