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


def spread(steps: list, scale: int, offset: int, big: int) -> list:
    """The case's batches with keys ``key * scale + offset`` and values ``v * big``."""
    out = []
    for s in steps:
        if isinstance(s, int):
            out.append(s)
            continue
        key = pa.array(s.column("key").to_numpy() * scale + offset)
        v = pa.array(s.column("v").to_numpy() * big)
        out.append(pa.record_batch([s.column("ts"), key, v, s.column("w")], schema=SCHEMA))
    return out


def window(kind: str, size: int, slide: int, lateness: int) -> WindowAggregate:
    spec = (WindowSpec("tumbling", size_ms=size) if kind == "tumbling"
            else WindowSpec("hopping", size_ms=size, slide_ms=slide))  # fmt: skip
    return WindowAggregate(["key"], "ts", spec, AGGS, SCHEMA, allowed_lateness_ms=lateness)


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
    big=st.sampled_from([1, 2**40, 2**47]),
    cut=st.integers(0, 20),
)
def test_dense_panes_match_duckdb_and_the_hash_path(  # type: ignore[no-untyped-def]
    case, kind, slide, scale, offset, big, cut
) -> None:
    table, steps, _ = case
    steps = spread(steps, scale, offset, big)
    size = slide * 2 if kind == "hopping" else slide
    make = lambda: window(kind, size, slide, 0)  # noqa: E731
    got = rows(drive(make(), steps))
    dense.ENABLED = False
    try:
        hashed = rows(drive(make(), steps))
    finally:
        dense.ENABLED = True
    assert _exact(got) == _exact(hashed)
    assert _exact(rows(resumed(make, steps, min(cut, len(steps))))) == _exact(got)
    if kind == "tumbling":  # (the hopping property test checks windows and lateness)
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
