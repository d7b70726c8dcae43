"""Dense pane accumulators (``ring0.operators.window.dense_panes``) against DuckDB and the
hash path: random out-of-order batches and watermarks, keys spread wide, shifted below
zero and growing, integer values large enough that a float64 sum could round (the pane
is handed over to the table path first), resumed from a snapshot at a random point."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ring0.operators import dense
from ring0.operators.window import WindowAggregate, WindowSpec
from tests.unit.ring0.test_window import aggs, drive, resumed, rows
from tests.unit.ring0.test_window_property import SCHEMA, make_case, reference

AGGS = aggs("count", "sum(v)", "min(v)", "max(v)", "avg(v)")
SELECT = """count(*) as "count", sum(v)::hugeint as sum_v, min(v) as min_v, max(v) as max_v,
    avg(v) as avg_v"""


FLOATS = pa.schema([("ts", pa.int64()), ("key", pa.int64()), ("v", pa.float64()),
                    ("w", pa.int64())])  # fmt: skip


def spread(steps: list, scale: int, offset: int, big: float) -> list:
    """The case's batches with keys ``key * scale + offset`` and values ``v * big`` (float
    values when ``big`` is a float: sums that round differently in another order)."""
    out = []
    schema = FLOATS if isinstance(big, float) else SCHEMA
    for s in steps:
        if isinstance(s, int):
            out.append(s)
            continue
        key = pa.array(s.column("key").to_numpy() * scale + offset)
        v = s.column("v").to_numpy() * big
        if isinstance(big, float):
            v = v + (s.column("w").to_numpy() - 1) * 0.3  # a fraction that rounds away
        out.append(pa.record_batch([s.column("ts"), key, pa.array(v), s.column("w")],
                                   schema=schema))  # fmt: skip
    return out


def window(kind: str, size: int, slide: int, lateness: int,
           schema: pa.Schema = SCHEMA) -> WindowAggregate:  # fmt: skip
    spec = (WindowSpec("tumbling", size_ms=size) if kind == "tumbling"
            else WindowSpec("hopping", size_ms=size, slide_ms=slide))  # fmt: skip
    return WindowAggregate(["key"], "ts", spec, AGGS, schema, allowed_lateness_ms=lateness)


def _exact(out: list[dict]) -> list[dict]:
    return [{**r, "avg_v": round(r["avg_v"], 6)} for r in out]


@settings(max_examples=60, deadline=None)
@given(
    case=st.builds(make_case, seed=st.integers(0, 2**32 - 1), n_batches=st.integers(1, 10),
                   disorder=st.integers(0, 80), jumpy=st.booleans()),  # fmt: skip
    kind=st.sampled_from(["tumbling", "hopping"]),
    slide=st.sampled_from([5, 20, 100]),
    scale=st.sampled_from([1, 3, 2_000, 400_000]),
    offset=st.sampled_from([0, -7, -(10**12)]),
    big=st.sampled_from([1, 2**40, 2**47, 1e15, 3.7e300]),
    cut=st.integers(0, 20),
)
def test_dense_panes_match_duckdb_and_the_hash_path(  # type: ignore[no-untyped-def]
    case, kind, slide, scale, offset, big, cut
) -> None:
    table, steps, _ = case
    steps = spread(steps, scale, offset, big)
    floats = isinstance(big, float)
    size = slide * 2 if kind == "hopping" else slide
    make = lambda: window(kind, size, slide, 0, FLOATS if floats else SCHEMA)  # noqa: E731
    got = rows(drive(make(), steps))
    dense.ENABLED = False
    try:
        hashed = rows(drive(make(), steps))
    finally:
        dense.ENABLED = True
    assert str(got) == str(hashed)  # bit for bit (str: nan and inf compare as themselves)
    assert str(rows(resumed(make, steps, min(cut, len(steps))))) == str(got)
    if kind == "tumbling" and not floats:  # (the hopping property test checks windows and lateness)
        batches = [s for s in steps if not isinstance(s, int)]
        if batches and any(b.num_rows for b in batches):
            t = pa.Table.from_batches(batches)
            ws = t.column("ts").to_numpy() - t.column("ts").to_numpy() % size
            seen_late = _late_rows(steps, size)
            if not seen_late:
                expected = reference(
                    f"select ws as window_start, ws + {size} as window_end, key, {SELECT} "
                    "from rows group by ws, key",
                    t.append_column("ws", pa.array(ws)),
                )
                for r in expected:
                    r["sum_v"] = int(r["sum_v"])
                assert _exact(got) == _exact(expected)


def _late_rows(steps: list, size: int) -> bool:
    """Whether any row arrives for a window the watermark already closed."""
    wm = None
    for s in steps:
        if isinstance(s, int):
            wm = s if wm is None else max(wm, s)
        elif wm is not None and s.num_rows:
            ts = s.column("ts").to_numpy()
            if ((ts - ts % size) + size <= wm).any():
                return True
    return False


def test_a_steady_stream_is_counted_in_arrays_and_equals_the_hash_path() -> None:
    """W1's shape: 10,000 keys, one pane per batch; the arrays take (almost) every batch."""
    rng = np.random.default_rng(7)
    steps: list = []
    for i in range(40):
        ts = np.sort(rng.integers(i * 250, (i + 1) * 250, 5_000))
        cols = [ts, rng.integers(0, 10_000, 5_000), rng.integers(-5, 5, 5_000), np.zeros(5_000)]
        steps.append(pa.record_batch([pa.array(c, pa.int64()) for c in cols], schema=SCHEMA))
        steps.append(int(ts[-1]) - 1)
    op = window("tumbling", 1000, 1000, 0)
    got = rows(drive(op, steps))
    assert op._impl.dense is not None and op._impl.dense.added >= 30
    dense.ENABLED = False
    try:
        assert _exact(rows(drive(window("tumbling", 1000, 1000, 0), steps))) == _exact(got)
    finally:
        dense.ENABLED = True


@pytest.mark.parametrize(
    ("values", "why"),
    [
        (pa.array([1.0, float("nan"), 2.0]), "NaN with a min"),
        (pa.array([1, None, 2], pa.int64()), "a null value"),
    ],
)
def test_batches_the_arrays_cannot_count_exactly_take_the_table_path(values, why) -> None:  # type: ignore[no-untyped-def]
    schema = pa.schema([("ts", pa.int64()), ("key", pa.int64()), ("v", values.type)])
    op = WindowAggregate(["key"], "ts", WindowSpec("tumbling", size_ms=10), aggs("min(v)"),
                         schema)  # fmt: skip
    b = pa.record_batch([pa.array([1, 2, 3]), pa.array([0, 0, 1]), values], schema=schema)
    op.process(b)
    assert op._impl.dense.added == 0, why
    out = rows(op.finish())
    assert [r["key"] for r in out] == [0, 1]


@pytest.mark.parametrize(
    ("schema", "batches", "aggregates"),
    [  # found by review: each differed from the hash path before the fix
        (SCHEMA, [([1, 2], [0, 0], [2**53 + 1, 2**60 + 1])], ["max(v)", "sum(v)"]),
        (FLOATS, [([9, 10], [0, 0], [0.0, 1.0]), ([11], [0], [1e16]), ([12], [0], [-1e16])],
         ["sum(v)"]),  # fmt: skip
        (FLOATS, [([9, 10], [0, 0], [0.0, 1e308]), ([11], [0], [1e308]), ([12], [0], [-1e308])],
         ["sum(v)"]),  # fmt: skip
        (FLOATS, [([11], [0], [1e16]), ([12, 13], [0, 0], [1.0, None]), ([13], [0], [1.0]),
                  ([14], [0], [1.0])], ["sum(v)", "count(v)", "avg(v)"]),  # fmt: skip
        (FLOATS, [([1], [0], [float("nan")]), ([2], [0], [1.0])], ["min(v)", "max(v)"]),
        (SCHEMA, [([1], [0], [-(2**63)]), ([2], [0], [1])], ["sum(v)"]),
        (SCHEMA, [([1], [0], [-(2**63)]), ([2], [0], [-1])], ["sum(v)"]),
    ],
)
def test_sums_equal_the_hash_path_bit_for_bit(schema, batches, aggregates) -> None:  # type: ignore[no-untyped-def]
    steps = [pa.record_batch([pa.array(ts), pa.array(k), pa.array(v, schema.field("v").type),
                              pa.array([1] * len(ts))], schema=schema)
             for ts, k, v in batches]  # fmt: skip

    def make() -> WindowAggregate:
        return WindowAggregate(["key"], "ts", WindowSpec("tumbling", size_ms=10),
                               aggs(*aggregates), schema)  # fmt: skip

    got = str(rows(drive(make(), steps)))
    for cut in range(len(steps) + 1):  # a snapshot between any two batches changes nothing
        assert str(rows(resumed(make, steps, cut))) == got
    dense.ENABLED = False
    try:
        assert str(rows(drive(make(), steps))) == got
    finally:
        dense.ENABLED = True


def test_sparse_keys_in_many_open_panes_take_no_arrays() -> None:
    """Two keys 65,535 apart in each of 1,000 panes kept open by a long lateness: arrays
    would hold 65,536 cells each; the table path holds two rows."""
    op = WindowAggregate(["key"], "ts", WindowSpec("tumbling", size_ms=1),
                         aggs("sum(v)", "min(v)", "max(v)"), SCHEMA,
                         allowed_lateness_ms=3_600_000)  # fmt: skip
    for i in range(1000):
        op.process(pa.record_batch([pa.array([i, i]), pa.array([0, 65_535]), pa.array([1, 2]),
                                    pa.array([0, 0])], schema=SCHEMA))  # fmt: skip
    assert op._impl.dense.cells() == 0 and op.open_windows == 1000
