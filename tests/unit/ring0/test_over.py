"""The over step (``RowsOver``): random streams against DuckDB's window functions, by hand
edge cases, snapshot/restore, and errors."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError, DataError, StateError
from ring0.operators.aggregate_spec import parse_aggregate
from ring0.operators.over import RowsOver
from tests.unit.ring0.test_join_interval import ipc_round_trip

AGGS = ["count", "count(x) as n_x", "sum(x) as sum_x", "avg(x) as avg_x", "min(x) as min_x",
        "max(x) as max_x", "sum(f) as sum_f", "min(f) as min_f"]  # fmt: skip
SQL = ("count(*) OVER w, count(x) OVER w, sum(x) OVER w, avg(x) OVER w, min(x) OVER w, "
       "max(x) OVER w, sum(f) OVER w, min(f) OVER w")  # fmt: skip


INT64 = pa.int64()


def schema(key_type: pa.DataType = INT64) -> pa.Schema:
    return pa.schema([("k", key_type), ("t", pa.timestamp("ms")), ("id", pa.int64()),
                      ("x", pa.int32()), ("f", pa.float64())])  # fmt: skip


def make(rows: int, key_type: pa.DataType = INT64, aggs: list[str] = AGGS) -> RowsOver:
    specs = [parse_aggregate(a) for a in aggs]
    return RowsOver(["k"], "t", ["id"], rows, specs, schema(key_type))


def batch(k: list, t: list, x: list, ids: list | None = None, key_type=INT64):  # type: ignore[no-untyped-def]
    ids = ids if ids is not None else list(range(len(t)))
    f = [None if v is None else v / 4 for v in x]
    return pa.record_batch([pa.array(k, key_type), pa.array(t, pa.timestamp("ms")), ids,
                            pa.array(x, pa.int32()), pa.array(f, pa.float64())],
                           schema=schema(key_type))  # fmt: skip


def table_of(batches: list[pa.RecordBatch], op: RowsOver) -> pa.Table:
    return pa.Table.from_batches(batches, op.output_schema)


def test_over_frame_is_this_row_and_the_rows_before_it_in_time_order() -> None:
    op = make(3, aggs=["count", "sum(x) as s"])
    out = op.process(batch([1, 1, 1, 1, 2], [40, 10, 30, 20, 10], [4, 1, 3, 2, 9]), 0)
    assert out == []  # rows wait for the watermark
    out = op.on_watermark(35)  # times 10, 20, 30 (key 1) and 10 (key 2) are complete
    got = table_of(out, op).select(["k", "x", "count", "s"]).to_pylist()
    assert got == [
        {"k": 1, "x": 1, "count": 1, "s": 1},
        {"k": 1, "x": 2, "count": 2, "s": 3},
        {"k": 1, "x": 3, "count": 3, "s": 6},
        {"k": 2, "x": 9, "count": 1, "s": 9},
    ]
    out = op.process(batch([1], [50], [5]), 0) + op.finish()  # 2, 3 come from the history
    got = table_of(out, op).select(["x", "count", "s"]).to_pylist()
    assert got == [{"x": 4, "count": 3, "s": 9}, {"x": 5, "count": 3, "s": 12}]


def test_over_row_at_the_watermark_waits_and_late_rows_are_counted() -> None:
    op = make(2, aggs=["count"])
    op.process(batch([1, 1], [10, 20], [1, 2]), 0)
    assert table_of(op.on_watermark(20), op).column("x").to_pylist() == [1]
    op.process(batch([1, 1], [19, 20], [3, 4]), 0)  # 19 is behind the watermark: late
    assert op.late_rows == 1
    assert table_of(op.finish(), op).column("count").to_pylist() == [2, 2]


def test_over_nulls_are_skipped_and_an_all_null_frame_gives_null() -> None:
    op = make(2, aggs=["count", "count(x) as n", "sum(x) as s", "avg(x) as a", "max(x) as m"])
    op.process(batch([1, 1, 1], [1, 2, 3], [None, None, 4]), 0)
    got = table_of(op.finish(), op).select(["count", "n", "s", "a", "m"]).to_pylist()
    assert got == [
        {"count": 1, "n": 0, "s": None, "a": None, "m": None},
        {"count": 2, "n": 0, "s": None, "a": None, "m": None},
        {"count": 2, "n": 1, "s": 4, "a": 4.0, "m": 4},
    ]


def test_over_null_key_is_a_key_and_null_time_is_dropped_and_counted() -> None:
    op = make(5, aggs=["count"])
    op.process(batch([None, None, 1], [1, 2, None], [1, 2, 3]), 0)
    out = table_of(op.finish(), op)
    assert out.select(["k", "count"]).to_pylist() == [
        {"k": None, "count": 1}, {"k": None, "count": 2}
    ]
    assert op.null_time_rows == 1


def test_over_integer_sum_past_int64_stops_naming_the_aggregate() -> None:
    s = pa.schema([("k", pa.int64()), ("t", pa.int64()), ("x", pa.int64())])
    op = RowsOver(["k"], "t", [], 2, [parse_aggregate("sum(x) as s")], s)
    big = 2**62
    op.process(pa.record_batch([[1, 1], [1, 2], [big, big]], schema=s), 0)
    with pytest.raises(DataError, match=r"sum\(x\) as s: a sum over 2 rows is past int64"):
        op.finish()


def test_over_one_row_frame_and_a_global_key() -> None:
    s = pa.schema([("t", pa.int64()), ("x", pa.float64())])
    op = RowsOver([], "t", [], 1, [parse_aggregate("max(x) as m")], s)
    op.process(pa.record_batch([[3, 1, 2], [0.5, 1.5, -1.0]], schema=s), 0)
    assert table_of(op.finish(), op).column("m").to_pylist() == [1.5, -1.0, 0.5]


@pytest.mark.parametrize(
    ("aggs", "rows", "message"),
    [
        (["max_by(x, f)"], 2, "an over step computes"),
        (["sum(k * 2) as kk"], 2, "is not a column of the input"),
        (["sum(t)"], 2, "it must be a number"),
        (["count as x"], 2, "output column 'x' is already a column"),
        ([], 2, "needs at least one"),
        (["count"], 0, "rows=0 must be an integer from 1 to 100,000"),
        (["count"], 100_001, "rows=100001 must be an integer from 1 to 100,000"),
    ],
)
def test_over_bad_config_raises_config_error(aggs: list[str], rows: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make(rows, aggs=aggs)


def test_over_restore_of_foreign_state_raises_state_error() -> None:
    state = make(3).snapshot()
    with pytest.raises(StateError, match="expected"):
        make(3, key_type=pa.string()).restore(state)
    del state["meta"]
    with pytest.raises(StateError, match="tables"):
        make(3).restore(state)


def _steps(seed: int, n: int, keys: int, disorder: int, slack: int, key_type: pa.DataType):
    """(batch | watermark) steps: times up to ``disorder`` out of order, watermark ``slack``
    behind; some rows late."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, n // 2 + 1, n)) + rng.integers(0, disorder + 1, n)
    k = [None if v < 0 else (f"k{v}" if key_type == pa.string() else int(v))
         for v in rng.integers(-1, keys, n)]  # fmt: skip
    x = [None if rng.random() < 0.1 else int(v) for v in rng.integers(-1000, 1000, n)]
    steps, seen, lo = [], -(2**40), 0
    while lo < n:
        hi = min(n, lo + int(rng.integers(1, 40)))
        steps.append(batch(k[lo:hi], t[lo:hi].tolist(), x[lo:hi], list(range(lo, hi)), key_type))
        seen = max(seen, int(t[lo:hi].max()))
        if rng.random() < 0.7:
            steps.append(seen - slack)
        lo = hi
    return steps


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 400),
    keys=st.integers(1, 12),
    rows=st.integers(1, 7),
    disorder=st.integers(0, 20),
    slack=st.integers(0, 25),
    strings=st.booleans(),
    restore_frac=st.floats(0, 1),
)
def test_over_random_streams_match_duckdb_window_functions_on_on_time_rows(
    seed: int, n: int, keys: int, rows: int, disorder: int, slack: int, strings: bool,
    restore_frac: float,
) -> None:
    key_type = pa.string() if strings else pa.int64()
    steps = _steps(seed, n, keys, disorder, slack, key_type)

    def run(restore_at: int | None) -> tuple[RowsOver, pa.Table, pa.Table]:
        op, out, on_time, wm = make(rows, key_type), [], [], None
        for i, step in enumerate(steps):
            if i == restore_at:
                state = ipc_round_trip(op.snapshot())
                op = make(rows, key_type)
                op.restore(state)
            if isinstance(step, int):
                out += op.on_watermark(step)
                wm = step if wm is None else max(wm, step)
            else:
                out += op.process(step, 0)
                ms = step.column("t").cast(pa.int64()).to_numpy()
                on_time.append(step.filter(pa.array(ms >= wm)) if wm is not None else step)
        out += op.finish()
        return op, table_of(out, op), pa.Table.from_batches(on_time, schema(key_type))

    op, got, fed = run(None)
    con = duckdb.connect()
    con.register("s", fed)
    ref = con.execute(
        f"SELECT *, {SQL} FROM s WINDOW w AS (PARTITION BY k ORDER BY t, id "
        f"ROWS BETWEEN {rows - 1} PRECEDING AND CURRENT ROW) ORDER BY id"
    ).fetchall()
    assert got.num_rows == len(ref) == fed.num_rows
    mine = sorted(got.to_pylist(), key=lambda r: r["id"])
    names = got.column_names
    for a, b in zip(mine, ref, strict=True):
        for name, want in zip(names, b, strict=True):
            have = a[name]
            if isinstance(want, float) and want is not None and have is not None:
                assert math.isclose(have, want, rel_tol=1e-12, abs_tol=1e-9), (name, a, b)
            else:
                assert have == want, (name, a, b)
    assert op.late_rows == sum(s.num_rows for s in steps if not isinstance(s, int)) - len(ref)
    restored, again, _ = run(int(restore_frac * len(steps)))
    assert sorted(again.to_pylist(), key=lambda r: r["id"]) == mine
    assert restored.late_rows == op.late_rows
