"""ASOF join: edge cases by hand, and random streams against DuckDB's ASOF LEFT JOIN."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError, StateError
from ring0.operators.join import AsofJoin

L = pa.schema([("k", pa.int64()), ("t", pa.int64()), ("lid", pa.int64())])
R = pa.schema([("k", pa.int64()), ("t", pa.int64()), ("rid", pa.int64())])


def make(tolerance: int | None = None, **kw: bool) -> AsofJoin:
    return AsofJoin(L, R, ["k"], ["k"], "t", "t", tolerance, "l_", "r_", **kw)


def left(k: list[int | None], t: list[int | None], ids: list[int]) -> pa.RecordBatch:
    return pa.record_batch([pa.array(k, pa.int64()), pa.array(t, pa.int64()), ids], schema=L)


def right(k: list[int | None], t: list[int | None], ids: list[int]) -> pa.RecordBatch:
    return pa.record_batch([pa.array(k, pa.int64()), pa.array(t, pa.int64()), ids], schema=R)


def matches(batches: list[pa.RecordBatch]) -> dict[int, int | None]:
    """left id -> matched right id (None: unmatched); asserts each left row came out once."""
    out: dict[int, int | None] = {}
    for b in batches:
        for lid, rid in zip(
            b.column("l_lid").to_pylist(), b.column("r_rid").to_pylist(), strict=True
        ):
            assert lid not in out, f"left row {lid} emitted twice"
            out[lid] = rid
    return out


def ipc_round_trip(state: dict[str, pa.Table]) -> dict[str, pa.Table]:
    out = {}
    for name, table in state.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        out[name] = pa.ipc.open_file(sink.getvalue()).read_all()
    return out


def test_asof_join_picks_latest_right_row_at_or_before_left_time() -> None:
    op = make()
    op.process(right([1, 1, 1, 2], [10, 20, 30, 5], [10, 20, 30, 5]), 1)
    assert op.process(left([1, 1, 1, 2, 3], [9, 20, 29, 100, 50], [0, 1, 2, 3, 4]), 0) == []
    out = op.on_watermark(1000)
    assert matches(out) == {0: None, 1: 20, 2: 20, 3: 5, 4: None}
    assert all(b.schema == op.output_schema for b in out)
    assert op.output_schema.field("r_rid").nullable


def test_asof_join_left_row_waits_until_watermark_passes_its_time() -> None:
    op = make()
    op.process(right([1], [5], [5]), 1)
    op.process(left([1], [10], [0]), 0)
    assert op.on_watermark(10) == []  # a right row at 10 is still on time
    op.process(right([1], [10], [10]), 1)
    assert matches(op.on_watermark(11)) == {0: 10}
    assert op.state_rows == (0, 1)


def test_asof_join_tolerance_is_inclusive_and_unmatched_rows_get_nulls() -> None:
    op = make(tolerance=5)
    op.process(right([1, 2], [10, 10], [1, 2]), 1)
    op.process(left([1, 2, 1], [15, 16, 10], [0, 1, 2]), 0)
    out = op.on_watermark(100)
    assert matches(out) == {0: 1, 1: None, 2: 1}
    row = next(r for b in out for r in b.to_pylist() if r["l_lid"] == 1)
    assert row["r_k"] is None and row["r_t"] is None


def test_asof_join_zero_tolerance_matches_equal_times_only() -> None:
    op = make(tolerance=0)
    op.process(right([1, 1], [10, 20], [1, 2]), 1)
    op.process(left([1, 1], [10, 19], [0, 1]), 0)
    assert matches(op.finish()) == {0: 1, 1: None}


def test_asof_join_equal_right_times_last_arrival_wins() -> None:
    op = make()
    op.process(right([1, 1], [10, 10], [1, 2]), 1)
    op.process(right([1], [10], [3]), 1)
    op.process(left([1, 1], [10, 50], [0, 1]), 0)
    assert matches(op.on_watermark(20)) == {0: 3}
    assert op.state_rows == (1, 1)  # only the winner of the tie is kept
    assert matches(op.finish()) == {1: 3}


def test_asof_join_null_keys_and_times() -> None:
    op = make()
    op.process(right([None, 1, 1], [5, None, 5], [1, 2, 3]), 1)
    assert op.null_rows == 2
    out = op.process(left([1, None], [None, 7], [0, 1]), 0)  # no time: out at once, unmatched
    assert matches(out) == {0: None}
    assert matches(op.on_watermark(8)) == {1: None}


def test_asof_join_right_state_keeps_latest_per_key_and_all_after_watermark() -> None:
    op = make()
    for step in range(100):
        t = np.arange(step * 10, step * 10 + 10)
        op.process(right((t % 4).tolist(), t.tolist(), t.tolist()), 1)
        op.on_watermark(int(t[-1]) - 3)
        assert op.state_rows[1] == 4 + 4  # one per key before the watermark, 4 rows after
    op.process(left([0, 1, 2, 3], [10**6] * 4, [0, 1, 2, 3]), 0)
    assert matches(op.finish()) == {0: 996, 1: 997, 2: 998, 3: 999}


def test_asof_join_tolerance_drops_right_rows_older_than_watermark_minus_tolerance() -> None:
    op = make(tolerance=10)
    op.process(right([1, 2], [100, 95], [1, 2]), 1)
    op.on_watermark(105)
    assert op.state_rows == (0, 2)
    op.process(left([1, 2], [105, 105], [0, 1]), 0)  # 105 - 95 = 10: both still match
    assert matches(op.on_watermark(106)) == {0: 1, 1: 2}
    assert op.state_rows == (0, 1)  # key 2 at 95 < 106 - 10: gone; key 1 at 100 kept
    op.on_watermark(111)
    assert op.state_rows == (0, 0)


def test_asof_join_late_rows_are_counted_and_kept_per_port() -> None:
    op = make(keep_late=True)
    op.on_watermark(50)
    op.process(left([1, 1], [49, 50], [0, 1]), 0)
    op.process(right([1, 1], [40, 50], [2, 3]), 1)
    assert (op.late_rows, op.late_by_port) == (2, [1, 1])
    assert pa.Table.from_batches(op.take_late(0)).column("lid").to_pylist() == [0]
    assert pa.Table.from_batches(op.take_late(1)).column("rid").to_pylist() == [2]
    assert matches(op.finish()) == {1: 3}


def test_asof_join_compound_keys_match_on_every_column() -> None:
    ls = pa.schema([("a", pa.string()), ("b", pa.int32()), ("t", pa.int64()), ("id", pa.int8())])
    rs = pa.schema([("x", pa.string()), ("y", pa.int32()), ("t", pa.int64()), ("v", pa.int8())])
    op = AsofJoin(ls, rs, ["a", "b"], ["x", "y"], "t", "t", right_prefix="r_")
    op.process(pa.record_batch([["p", "p", "q", None], [1, 2, 1, 1], [1] * 4, [1, 2, 3, 4]], rs), 1)
    lb = pa.record_batch([["p", "p", "q", "q", None], [2, 1, 2, None, 1], [5] * 5, range(5)], ls)
    op.process(lb, 0)
    table = pa.Table.from_batches(op.finish()).sort_by("id")
    assert table.column("r_v").to_pylist() == [2, 1, None, None, None]
    assert op.null_rows == 1


def test_asof_join_timestamp_columns_compare_in_the_finer_unit() -> None:
    ls = pa.schema([("k", pa.string()), ("t", pa.timestamp("s"))])
    rs = pa.schema([("k", pa.string()), ("t", pa.timestamp("us")), ("v", pa.int8())])
    op = AsofJoin(ls, rs, ["k"], ["k"], "t", "t", 0, right_prefix="r_")
    us = [999_999, 1_000_000, 1_000_001]
    op.process(pa.record_batch([["a"] * 3, pa.array(us, rs.field("t").type), [1, 2, 3]], rs), 1)
    op.process(pa.record_batch([["a", "b"], pa.array([1, 1], ls.field("t").type)], ls), 0)
    table = pa.Table.from_batches(op.on_watermark(1001)).sort_by("k")
    assert table.column("r_v").to_pylist() == [2, None]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tolerance_ms": -1}, "tolerance_ms=-1"),
        ({"right_key": ["rid"], "left_key": ["k"]}, None),
        ({"left_key": ["zz"]}, "left key 'zz'"),
        ({"left_time": "nope"}, "left time column 'nope'"),
        ({"right_prefix": ""}, "'k' occurs twice"),
    ],
)
def test_asof_join_bad_config_raises_config_error(
    kwargs: dict[str, object], match: str | None
) -> None:
    args: dict[str, object] = dict(
        left_schema=L, right_schema=R, left_key=["k"], right_key=["k"], left_time="t",
        right_time="t", left_prefix="", right_prefix="r_",
    )  # fmt: skip
    args.update(kwargs)
    if match is None:  # int64 keys on both sides: fine
        assert AsofJoin(**args).output_schema.names[-1] == "r_rid"  # type: ignore[arg-type]
        return
    with pytest.raises(ConfigError, match=match):
        AsofJoin(**args)  # type: ignore[arg-type]


def test_asof_join_restore_rejects_state_of_another_version() -> None:
    state = make().snapshot()
    state["meta"] = state["meta"].set_column(0, "version", pa.array([99], pa.int32()))
    with pytest.raises(StateError, match="version 99"):
        make().restore(state)


# -- random streams against DuckDB --------------------------------------------------------------


def scenario(seed: int, n: int, disorder: int, slack: int) -> list:
    """Interleaved (port, batch) and watermark steps; the watermark trails by ``slack``, or
    is sometimes the least time still to come (boundary cases: rows at exactly the watermark).

    Right (key, time) pairs are unique (DuckDB breaks ties arbitrarily). Some left rows have
    no time or no key; with ``slack < disorder`` some rows are late.
    """
    rng = np.random.default_rng(seed)
    base = np.sort(rng.integers(0, 2 * n + 1, n))
    ts = (base + rng.integers(0, disorder + 1, n)).astype(object)
    port = rng.integers(0, 2, n)
    keys = rng.integers(0, 3, n).astype(object)
    left_rows = port == 0
    keys[left_rows & (rng.random(n) < 0.05)] = None
    ts[left_rows & (rng.random(n) < 0.05)] = None
    seen_right: set[tuple[object, object]] = set()
    for i in np.flatnonzero(~left_rows):
        if (keys[i], ts[i]) in seen_right:
            port[i] = 0  # a right duplicate becomes a left row instead
        seen_right.add((keys[i], ts[i]))
    n_cuts = min(n - 1, int(rng.integers(0, 12)))
    cuts = np.sort(rng.choice(np.arange(1, max(n, 2)), size=n_cuts, replace=False))
    steps: list = []
    known = np.array([np.iinfo(np.int64).max if t is None else t for t in ts], dtype=np.int64)
    tight = np.minimum.accumulate(np.append(known, np.iinfo(np.int64).max)[::-1])[::-1]
    seen = -(2**62)
    for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), n], strict=True):
        for p in [0, 1] if rng.random() < 0.5 else [1, 0]:
            sel = np.flatnonzero(port[lo:hi] == p) + lo
            if sel.size:
                k = pa.array(keys[sel].tolist(), pa.int64())
                arrays = [k, pa.array(ts[sel].tolist(), pa.int64()), sel]
                steps.append((p, pa.record_batch(arrays, schema=L if p == 0 else R)))
        seen = max(seen, max((t for t in ts[lo:hi] if t is not None), default=seen))
        if rng.random() < 0.3 and hi < n:  # the tightest watermark: the next row's time
            steps.append(("wm", int(tight[hi])))
        elif rng.random() < 0.8:
            steps.append(("wm", seen - slack))
    return steps


def drive(
    factory: Callable[[], AsofJoin], steps: list, restore_at: int | None = None
) -> tuple[AsofJoin, list[pa.RecordBatch], list[list[pa.RecordBatch]]]:
    """Run ``steps``; at ``restore_at`` continue on a fresh operator restored from a snapshot.

    Returns the operator, its output and, per port, the rows that were on time on arrival.
    """
    op = factory()
    out: list[pa.RecordBatch] = []
    on_time: list[list[pa.RecordBatch]] = [[], []]
    wm = None
    for i, (what, arg) in enumerate(steps):
        if i == restore_at:
            state = ipc_round_trip(op.snapshot())
            op = factory()
            op.restore(state)
        if what == "wm":
            out += op.on_watermark(arg)
            wm = arg if wm is None else max(wm, arg)
            continue
        out += op.process(arg, what)
        t = arg.column("t")
        late = pc.fill_null(pc.less(t, wm), False) if wm is not None else None
        on_time[what].append(arg.filter(pc.invert(late)) if late is not None else arg)
    out += op.finish()
    return op, out, on_time


def rows(batches: list[pa.RecordBatch]) -> Counter[tuple]:
    return Counter(tuple(r.values()) for b in batches for r in b.to_pylist())


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    tolerance=st.one_of(st.none(), st.integers(0, 10)),
    disorder=st.integers(0, 20),
    slack=st.integers(0, 20),
    restore_frac=st.floats(0, 1),
)
def test_asof_join_random_streams_match_duckdb_asof_left_join(
    seed: int, n: int, tolerance: int | None, disorder: int, slack: int, restore_frac: float
) -> None:
    steps = scenario(seed, n, disorder, slack)

    def factory() -> AsofJoin:
        return AsofJoin(L, R, ["k"], ["k"], "t", "t", tolerance, "l_", "r_")

    op, out, on_time = drive(factory, steps)
    con = duckdb.connect()
    con.register("l", pa.Table.from_batches(on_time[0], L))
    con.register("r", pa.Table.from_batches(on_time[1], R))
    within = "TRUE" if tolerance is None else f"l.t - r.t <= {tolerance}"
    right_cols = ", ".join(f"CASE WHEN {within} THEN r.{c} END" for c in R.names)
    ref = con.execute(
        f"SELECT l.*, {right_cols} FROM l ASOF LEFT JOIN r ON l.k = r.k AND l.t >= r.t"
    ).fetchall()
    assert rows(out) == Counter(ref)
    fed = sum(arg.num_rows for what, arg in steps if what != "wm")
    assert op.late_rows == fed - sum(b.num_rows for side in on_time for b in side)
    assert op.state_rows[0] == 0

    restored, out2, _ = drive(factory, steps, restore_at=int(restore_frac * len(steps)))
    assert rows(out2) == rows(out)
    assert (restored.late_rows, restored.null_rows) == (op.late_rows, op.null_rows)
