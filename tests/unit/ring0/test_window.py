"""Tumbling-window aggregation against a direct pyarrow computation on the same rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError
from ring0.operators.window import Aggregate, TumblingWindowAggregate

SCHEMA = pa.schema([("ts", pa.int64()), ("key", pa.int64()), ("value", pa.float64())])
AGGS = [
    Aggregate("count"),
    Aggregate("sum", "value"),
    Aggregate("min", "value"),
    Aggregate("max", "value"),
    Aggregate("avg", "value"),
]


def reference(rows: pa.Table, size: int) -> pa.Table:
    ts = rows.column("ts").to_numpy()
    t = rows.append_column("window_start", pa.array(ts - ts % size))
    ref = t.group_by(["window_start", "key"]).aggregate(
        [([], "count_all"), ("value", "sum"), ("value", "min"), ("value", "max"), ("value", "mean")]
    )
    return ref.sort_by([("window_start", "ascending"), ("key", "ascending")])


def run(
    op: TumblingWindowAggregate, batches: list[pa.RecordBatch], watermarks: list[int]
) -> pa.Table:
    out = []
    for b, wm in zip(batches, watermarks, strict=True):
        op.process(b)
        out += op.advance(wm)
    out += op.flush()
    return pa.Table.from_batches(out).sort_by([("window_start", "ascending"), ("key", "ascending")])


def assert_matches(result: pa.Table, ref: pa.Table, size: int) -> None:
    assert result.column("window_start").to_pylist() == ref.column("window_start").to_pylist()
    assert result.column("key").to_pylist() == ref.column("key").to_pylist()
    assert result.column("count").to_pylist() == ref.column("count_all").to_pylist()
    for ours, theirs in (
        ("sum_value", "value_sum"),
        ("min_value", "value_min"),
        ("max_value", "value_max"),
        ("avg_value", "value_mean"),
    ):
        np.testing.assert_allclose(
            result.column(ours).to_numpy(), ref.column(theirs).to_numpy(), rtol=1e-12
        )
    ends = result.column("window_end").to_numpy() - result.column("window_start").to_numpy()
    assert (ends == size).all()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.sampled_from([1, 7, 100, 1000]),
    disorder=st.integers(0, 500),
    n_batches=st.integers(1, 12),
)
def test_window_out_of_order_within_bound_matches_batch_computation(
    seed: int, size: int, disorder: int, n_batches: int
) -> None:
    """Rows up to ``disorder`` ms out of order, with a safe watermark: every row counted."""
    rng = np.random.default_rng(seed)
    n = n_batches * 200
    base = np.sort(rng.integers(-2000, 5000, n))
    ts = base + rng.integers(0, disorder + 1, n)  # each row pushed forward by up to `disorder`
    rows = pa.table({"ts": ts, "key": rng.integers(0, 5, n), "value": rng.random(n)}, schema=SCHEMA)
    batches = rows.to_batches(max_chunksize=200)
    op = TumblingWindowAggregate("key", "ts", size, AGGS, SCHEMA)
    # After batch k, every later row has ts >= base[its index] >= base[last row of batch k].
    watermarks = [int(base[(k + 1) * 200 - 1]) for k in range(n_batches)]
    assert_matches(run(op, batches, watermarks), reference(rows, size), size)
    assert op.late_rows == 0 and op.open_windows == 0


def test_window_late_rows_dropped_and_counted() -> None:
    op = TumblingWindowAggregate("key", "ts", 10, AGGS, SCHEMA)
    op.process(
        pa.record_batch(
            {"ts": [1, 2, 15], "key": [1, 1, 1], "value": [1.0, 2.0, 3.0]}, schema=SCHEMA
        )
    )
    emitted = op.advance(10)  # closes [0, 10)
    assert [b.num_rows for b in emitted] == [1] and emitted[0].column("count")[0].as_py() == 2
    op.process(pa.record_batch({"ts": [5, 16], "key": [1, 1], "value": [9.0, 4.0]}, schema=SCHEMA))
    assert op.late_rows == 1
    (last,) = op.flush()
    assert last.column("sum_value")[0].as_py() == 7.0 and last.column("count")[0].as_py() == 2


def test_window_boundary_row_belongs_to_the_window_it_starts() -> None:
    op = TumblingWindowAggregate("key", "ts", 10, [Aggregate("count")], SCHEMA)
    op.process(
        pa.record_batch(
            {"ts": [9, 10, -1, -10, -11], "key": [0] * 5, "value": [0.0] * 5}, schema=SCHEMA
        )
    )
    out = pa.Table.from_batches(op.flush())
    assert dict(
        zip(out.column("window_start").to_pylist(), out.column("count").to_pylist(), strict=True)
    ) == {-20: 1, -10: 2, 0: 1, 10: 1}


def test_window_rows_without_event_time_dropped_and_counted() -> None:
    op = TumblingWindowAggregate("key", "ts", 10, [Aggregate("count")], SCHEMA)
    op.process(
        pa.record_batch({"ts": [1, None], "key": [0, 0], "value": [0.0, 0.0]}, schema=SCHEMA)
    )
    assert op.null_time_rows == 1
    assert op.flush()[0].column("count")[0].as_py() == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": "nope"}, "column 'nope' is not in the input"),
        ({"size_ms": 0}, "size_ms=0 must be > 0"),
        ({"aggregates": [Aggregate("median", "value")]}, "'median' is not one of"),
        ({"aggregates": [Aggregate("sum")]}, "'sum' needs a column"),
        ({"aggregates": []}, "at least one aggregate"),
        ({"time": "value"}, "event-time column 'value' must be an integer"),
    ],
)
def test_window_bad_configuration_rejected_before_running(kwargs: dict, message: str) -> None:
    args = {
        "key": "key",
        "time": "ts",
        "size_ms": 10,
        "aggregates": AGGS,
        "input_schema": SCHEMA,
        **kwargs,
    }
    with pytest.raises(ConfigError, match=message):
        TumblingWindowAggregate(**args)


def test_window_batch_spanning_a_million_empty_windows_splits_only_present_ones() -> None:
    op = TumblingWindowAggregate("key", "ts", 1, [Aggregate("count")], SCHEMA)
    op.process(
        pa.record_batch(
            {"ts": [0, 5_000_000, 5_000_000, 2_000_000], "key": [1, 1, 2, 1], "value": [0.0] * 4},
            schema=SCHEMA,
        )
    )
    assert op.open_windows == 3
    out = pa.Table.from_batches(op.flush()).sort_by([("window_start", "ascending")])
    assert out.column("window_start").to_pylist() == [0, 2_000_000, 5_000_000, 5_000_000]
    assert out.column("count").to_pylist() == [1, 1, 1, 1]
