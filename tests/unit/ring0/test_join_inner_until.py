"""The inner join without time bounds, and the interval join bounded per left row
(``left_until``): edge cases by hand, random streams against DuckDB, snapshot/restore."""

from __future__ import annotations

from collections import Counter

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError
from ring0.operators.join import InnerJoin, IntervalJoin
from tests.unit.ring0.test_join_interval import L, R, drive, left, pairs, right, rows, scenario

LU = pa.schema([("k", pa.int64()), ("t", pa.int64()), ("lid", pa.int64()), ("u", pa.int64())])


def until_join(lower: int = 0) -> IntervalJoin:
    return IntervalJoin(LU, R, ["k"], ["k"], "t", "t", lower, 0, "l_", "r_", left_until="u")


def left_u(k: list, t: list, u: list, ids: list | None = None) -> pa.RecordBatch:
    ids = ids if ids is not None else list(range(len(t)))
    return pa.record_batch([pa.array(k, pa.int64()), pa.array(t, pa.int64()), ids,
                            pa.array(u, pa.int64())], schema=LU)  # fmt: skip


# -- inner join ---------------------------------------------------------------------------------


def test_inner_join_pairs_any_distance_apart_and_rows_behind_the_watermark_still_match() -> None:
    op = InnerJoin(L, R, ["k"], ["k"], "t", "t", "l_", "r_")
    out = op.process(left([1, 2], [0, 5], [0, 1]), 0)
    out += op.on_watermark(10**12)
    out += op.process(right([1, 1, 3], [10**12 + 7, 3, 1], [100, 101, 102]), 1)  # 101 is behind
    out += op.process(left([1], [2], [2]), 0)
    assert pairs(out) == Counter({(0, 100): 1, (0, 101): 1, (2, 100): 1, (2, 101): 1})
    assert op.late_rows == 0
    assert op.state_rows == (3, 3)  # nothing is ever trimmed


def test_inner_join_null_keys_and_times_are_dropped_and_counted() -> None:
    op = InnerJoin(L, R, ["k"], ["k"], "t", "t", "l_", "r_")
    out = op.process(left([1, None, 1], [0, 1, None], [0, 1, 2]), 0)
    out += op.process(right([1, None], [4, 4], [100, 101]), 1)
    assert pairs(out) == Counter({(0, 100): 1})
    assert op.null_rows == 3


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 250),
    disorder=st.integers(0, 30),
    slack=st.integers(0, 10),
    string_keys=st.booleans(),
    restore_frac=st.floats(0, 1),
)
def test_inner_join_random_streams_match_duckdb_on_every_row(
    seed: int, n: int, disorder: int, slack: int, string_keys: bool, restore_frac: float
) -> None:
    steps = scenario(seed, n, disorder, slack, string_keys)
    ktype = pa.string() if string_keys else pa.int64()
    ls, rs = L.set(0, pa.field("k", ktype)), R.set(0, pa.field("k", ktype))

    def factory() -> InnerJoin:
        return InnerJoin(ls, rs, ["k"], ["k"], "t", "t", "l_", "r_")

    op, out, _ = drive(factory, steps)  # type: ignore[arg-type]
    sides = [[b for p, b in steps if p == port] for port in (0, 1)]
    con = duckdb.connect()
    con.register("l", pa.Table.from_batches(sides[0], ls))
    con.register("r", pa.Table.from_batches(sides[1], rs))
    ref = con.execute("SELECT * FROM l JOIN r ON l.k = r.k").fetchall()  # late rows included
    assert rows(out) == Counter(ref)
    assert op.late_rows == 0
    restored, out2, _ = drive(factory, steps, restore_at=int(restore_frac * len(steps)))  # type: ignore[arg-type]
    assert rows(out2) == rows(out)
    assert restored.state_rows == op.state_rows


# -- interval join bounded per left row ---------------------------------------------------------


@pytest.mark.parametrize("right_first", [False, True])
def test_left_until_bounds_are_inclusive_and_per_row(right_first: bool) -> None:
    op = until_join(lower=0)
    lb = left_u([1, 1], [100, 100], [105, 200], [0, 1])
    rb = right([1, 1, 1, 1], [99, 100, 105, 106], [1, 2, 3, 4])
    calls = [(rb, 1), (lb, 0)] if right_first else [(lb, 0), (rb, 1)]
    out = [b for batch, port in calls for b in op.process(batch, port)]
    # row 0 is open [100, 105], row 1 [100, 200]
    assert pairs(out) == Counter({(0, 2): 1, (0, 3): 1, (1, 2): 1, (1, 3): 1, (1, 4): 1})


def test_left_until_row_is_kept_until_the_watermark_passes_its_bound() -> None:
    op = until_join()
    op.process(left_u([1, 2], [0, 0], [50, 5000], [0, 1]), 0)
    op.on_watermark(1000)  # first trim: row 0 (until 50) can match nothing any more
    assert op.state_rows == (1, 0)
    out = op.process(right([1, 2], [1000, 5000], [100, 101]), 1)
    assert pairs(out) == Counter({(1, 101): 1})
    op.on_watermark(5001)  # row 1's bound (5000) and both right rows are behind it now
    assert op.state_rows == (0, 0)


def test_left_until_null_bound_never_matches_and_is_counted() -> None:
    op = until_join()
    out = op.process(left_u([1, 1], [0, 0], [None, 10], [0, 1]), 0)
    out += op.process(right([1], [5], [100]), 1)
    assert pairs(out) == Counter({(1, 100): 1})
    assert op.null_rows == 1


def test_left_until_and_upper_ms_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="give one"):
        IntervalJoin(LU, R, ["k"], ["k"], "t", "t", 0, 5, left_until="u")
    with pytest.raises(ConfigError, match="must have the type of the left time column"):
        IntervalJoin(LU.set(3, pa.field("u", pa.float64())), R, ["k"], ["k"], "t", "t", 0, 0,
                     "l_", "r_", left_until="u")  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    lower=st.integers(-15, 5),
    longest=st.integers(0, 40),
    disorder=st.integers(0, 20),
    slack=st.integers(0, 20),
    restore_frac=st.floats(0, 1),
)
def test_left_until_random_streams_match_duckdb_on_on_time_rows(
    seed: int, n: int, lower: int, longest: int, disorder: int, slack: int, restore_frac: float
) -> None:
    rng = np.random.default_rng(seed)
    steps = []
    for what, arg in scenario(seed, n, disorder, slack, string_keys=False):
        if what == 0:  # each left row gets its own bound: time + 0..longest (sometimes null)
            span = rng.integers(0, longest + 1, arg.num_rows)
            u = pa.array(arg.column("t").to_numpy() + span, pa.int64(),
                         mask=rng.random(arg.num_rows) < 0.05)  # fmt: skip
            arg = pa.record_batch([*arg.columns, u], schema=LU)
        steps.append((what, arg))

    def factory() -> IntervalJoin:
        return until_join(lower)

    op, out, on_time = drive(factory, steps)
    lt, rt = pa.Table.from_batches(on_time[0], LU), pa.Table.from_batches(on_time[1], R)
    con = duckdb.connect()
    con.register("l", lt)
    con.register("r", rt)
    ref = con.execute(
        f"SELECT * FROM l JOIN r ON l.k = r.k AND r.t - l.t >= {lower} AND r.t <= l.u"
    ).fetchall()
    assert rows(out) == Counter(ref)
    restored, out2, _ = drive(factory, steps, restore_at=int(restore_frac * len(steps)))
    assert rows(out2) == rows(out)
    assert restored.state_rows == op.state_rows
    if op.watermark is not None:  # what is kept can still match: bound at or past the mark
        assert op.state_rows[0] == int(np.count_nonzero(op._u >= op.watermark))
