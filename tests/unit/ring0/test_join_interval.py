"""Interval join: edge cases by hand, and random streams against DuckDB on the on-time rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError, SchemaMismatchError, StateError
from ring0.operators.join import IntervalJoin
from ring0.operators.join.interval import TRIM_MIN_MS

L = pa.schema([("k", pa.int64()), ("t", pa.int64()), ("lid", pa.int64())])
R = pa.schema([("k", pa.int64()), ("t", pa.int64()), ("rid", pa.int64())])


def make(lower: int = -5, upper: int = 10, **kw: object) -> IntervalJoin:
    return IntervalJoin(L, R, ["k"], ["k"], "t", "t", lower, upper, "l_", "r_", **kw)  # type: ignore[arg-type]


def left(k: list[int | None], t: list[int | None], ids: list[int] | None = None) -> pa.RecordBatch:
    ids = ids if ids is not None else list(range(len(t)))
    return pa.record_batch([pa.array(k, pa.int64()), pa.array(t, pa.int64()), ids], schema=L)


def right(k: list[int | None], t: list[int | None], ids: list[int] | None = None) -> pa.RecordBatch:
    ids = ids if ids is not None else list(range(100, 100 + len(t)))
    return pa.record_batch([pa.array(k, pa.int64()), pa.array(t, pa.int64()), ids], schema=R)


def pairs(batches: list[pa.RecordBatch]) -> Counter[tuple[int, int]]:
    out: Counter[tuple[int, int]] = Counter()
    for b in batches:
        out.update(zip(b.column("l_lid").to_pylist(), b.column("r_rid").to_pylist(), strict=True))
    return out


def ipc_round_trip(state: dict[str, pa.Table]) -> dict[str, pa.Table]:
    out = {}
    for name, table in state.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        out[name] = pa.ipc.open_file(sink.getvalue()).read_all()
    return out


@pytest.mark.parametrize("right_first", [False, True])
def test_interval_join_bounds_inclusive_exact_edges_match_outside_do_not(right_first: bool) -> None:
    op = make(lower=-5, upper=10)
    lb = left([1], [100], [0])
    rb = right([1, 1, 1, 1], [95, 110, 94, 111], [1, 2, 3, 4])
    first, second = (rb, 1), (lb, 0)
    if not right_first:
        first, second = second, first
    assert op.process(*first) == []
    out = op.process(*second)
    assert pairs(out) == Counter({(0, 1): 1, (0, 2): 1})
    assert all(b.schema == op.output_schema for b in out)
    assert op.output_schema.names == ["l_k", "l_t", "l_lid", "r_k", "r_t", "r_rid"]


def test_interval_join_many_to_many_emits_every_pair_once() -> None:
    op = make(lower=0, upper=100)
    op.process(left([7, 7], [10, 20], [0, 1]), 0)
    out = op.process(right([7, 7, 7], [20, 30, 40], [5, 6, 7]), 1)
    out += op.process(right([8], [30], [9]), 1)  # other key: nothing
    expected = Counter({(i, j): 1 for i in (0, 1) for j in (5, 6, 7)})
    assert pairs(out) == expected
    assert op.finish() == []


def test_interval_join_string_and_compound_keys_match_on_all_columns() -> None:
    ls = pa.schema([("name", pa.string()), ("n", pa.int32()), ("ts", pa.int64()), ("x", pa.int8())])
    rs = pa.schema([("who", pa.string()), ("m", pa.int32()), ("ts", pa.int64())])
    op = IntervalJoin(ls, rs, ["name", "n"], ["who", "m"], "ts", "ts", 0, 0, right_prefix="r_")
    lb = pa.record_batch([["a", "a", "b", "é"], [1, 2, 1, 1], [5] * 4, [1, 2, 3, 4]], schema=ls)
    op.process(lb, 0)
    out = op.process(
        pa.record_batch([["a", "b", "b", "é"], [2, 1, 2, 1], [5, 5, 5, 5]], schema=rs), 1
    )
    table = pa.Table.from_batches(out).sort_by("x")
    assert table.column("x").to_pylist() == [2, 3, 4]
    assert table.column("r_who").to_pylist() == ["a", "b", "é"]
    assert table.schema.field("n").type == pa.int32()


def test_interval_join_null_keys_and_times_never_match_and_are_counted() -> None:
    op = make(lower=-10, upper=10)
    op.process(left([None, 1, 1], [5, None, 5], [0, 1, 2]), 0)
    out = op.process(right([None, 1, None], [5, 5, None], [5, 6, 7]), 1)
    assert pairs(out) == Counter({(2, 6): 1})
    assert op.null_rows == 4
    assert op.state_rows == (1, 1)


def test_interval_join_out_of_order_within_watermark_matches_everything() -> None:
    op = make(lower=-3, upper=3)
    op.on_watermark(0)
    out = []
    for t in (50, 10, 30, 20, 40):  # arrival out of order, all at or after the watermark
        out += op.process(left([1], [t], [t]), 0)
        out += op.process(right([1], [t + 2], [t + 1000]), 1)
    out += op.on_watermark(10)
    assert pairs(out) == Counter({(t, t + 1000): 1 for t in (10, 20, 30, 40, 50)})
    assert op.late_rows == 0


def test_interval_join_left_row_kept_until_watermark_passes_time_plus_upper() -> None:
    op = make(lower=-5, upper=10)
    op.process(left([1], [100], [0]), 0)
    op.on_watermark(110)  # a right row at 110 is still on time and matches (diff = upper)
    assert op.state_rows == (1, 0)
    assert pairs(op.process(right([1], [110], [1]), 1)) == Counter({(0, 1): 1})
    op.on_watermark(111)
    assert op.state_rows[0] == 0


def test_interval_join_right_row_kept_until_watermark_passes_time_minus_lower() -> None:
    op = make(lower=-5, upper=10)
    op.process(right([1], [100], [1]), 1)
    op.on_watermark(105)  # a left row at 105 is on time and matches (diff = lower)
    assert op.state_rows == (0, 1)
    assert pairs(op.process(left([1], [105], [0]), 0)) == Counter({(0, 1): 1})
    op.on_watermark(106)
    assert op.state_rows[1] == 0


def test_interval_join_state_shrinks_as_watermark_advances() -> None:
    op = make(lower=-20, upper=20)
    sizes, held = [], []
    for step in range(50):
        t = np.arange(step * 100, step * 100 + 100)
        op.process(left((t % 3).tolist(), t.tolist()), 0)
        op.process(right((t % 3).tolist(), t.tolist()), 1)
        op.on_watermark(int(t[-1]) - 10)  # 10 ms of out-of-orderness
        sizes.append(sum(op.state_rows))
        held.append(sum(t.num_rows for t in op._rows))
    assert max(sizes) <= 2 * (100 + 20 + 10)  # one batch plus the interval, never all 10,000 rows
    # trimmed every TRIM_MIN_MS (100 ms here) of watermark: at most that much more is held
    assert max(held) <= 2 * (100 + 20 + 10 + TRIM_MIN_MS)
    op.on_watermark(10**9)
    assert op.state_rows == (0, 0)
    assert sum(t.num_rows for t in op._rows) == 0


def test_interval_join_each_side_is_trimmed_after_its_own_span() -> None:
    """lower = 0, upper = 60 s: a right row is dead as soon as the watermark passes it, so
    the right side holds about TRIM_MIN_MS of rows, not a quarter of the minute."""
    op = make(lower=0, upper=60_000)
    held = []
    for step in range(300):
        t = np.arange(step * 100, step * 100 + 100)
        op.process(left((t + 10**6).tolist(), t.tolist()), 0)  # keys never equal: no output
        op.process(right(t.tolist(), t.tolist()), 1)
        op.on_watermark(int(t[-1]) - 10)
        held.append(op._rows[1].num_rows)
    assert max(held) <= 100 + 10 + TRIM_MIN_MS
    assert op.state_rows[1] == 11  # the rows at or after the watermark (t_last - 10 ..)


def test_interval_join_a_buffered_row_past_its_time_never_matches() -> None:
    """A left row whose time + upper is below the watermark, still buffered (the watermark
    moved less than a trim step), matches no right row, even one whose time difference
    overflows int64 (times in ns)."""
    ls = pa.schema([("k", pa.int64()), ("t", pa.int64())])
    rs = pa.schema([("k", pa.int64()), ("u", pa.timestamp("ns"))])
    op = IntervalJoin(ls, rs, ["k"], ["k"], "t", "u", -5 * 10**12, 0, "l_", "r_")
    op.on_watermark(-9 * 10**12 - 10)
    op.process(pa.record_batch([[1], [-9 * 10**12]], schema=ls), 0)
    op.on_watermark(-9 * 10**12 + 1)  # the left row is dead, the watermark moved 11 ms
    late = pa.record_batch([[1], pa.array([4_500_000_000_000_000_000], pa.timestamp("ns"))],
                           schema=rs)  # fmt: skip
    assert op.process(late, 1) == []
    assert op.state_rows == (0, 1)


def test_interval_join_rows_behind_watermark_are_late_counted_and_kept_per_port() -> None:
    op = make(lower=-5, upper=5, keep_late=True)
    op.process(right([1], [100], [9]), 1)
    op.on_watermark(98)
    out = op.process(left([1, 1, 1], [97, 98, 99], [0, 1, 2]), 0)
    out += op.process(right([1, 1], [90, 101], [7, 8]), 1)
    assert pairs(out) == Counter({(1, 9): 1, (2, 9): 1, (1, 8): 1, (2, 8): 1})
    assert (op.late_rows, op.late_by_port) == (2, [1, 1])
    assert pa.Table.from_batches(op.take_late(0)).column("lid").to_pylist() == [0]
    assert pa.Table.from_batches(op.take_late(1)).column("rid").to_pylist() == [7]
    assert op.take_late(0) == [] and op.take_late(1) == []


def test_interval_join_timestamps_of_different_units_compare_exactly() -> None:
    ls = pa.schema([("k", pa.int64()), ("t", pa.timestamp("ms", tz="UTC"))])
    rs = pa.schema([("k", pa.int64()), ("u", pa.timestamp("ns"))])
    op = IntervalJoin(ls, rs, ["k"], ["k"], "t", "u", 0, 1, "l_", "r_")
    op.process(pa.record_batch([[1], pa.array([1000], ls.field("t").type)], schema=ls), 0)
    ns = [999_999_999, 1_000_000_000, 1_001_000_000, 1_001_000_001]
    out = op.process(pa.record_batch([[1] * 4, pa.array(ns, pa.timestamp("ns"))], schema=rs), 1)
    got = pa.Table.from_batches(out).column("r_u").cast(pa.int64()).to_pylist()
    assert sorted(got) == ns[1:3]
    op.on_watermark(1002)  # 1000 ms + 1 ms upper < 1002 ms: left row gone, right rows too
    assert op.state_rows == (0, 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"left_key": ["nope"]}, "left key 'nope'"),
        ({"right_key": ["k", "t"]}, "equal length"),
        ({"right_time": "zz"}, "right time column 'zz'"),
        ({"lower_ms": 5, "upper_ms": 4}, "lower_ms=5 > upper_ms=4"),
        ({"left_prefix": ""}, "'k' occurs twice.*left_prefix or right_prefix"),
    ],
)
def test_interval_join_bad_config_raises_config_error_naming_value(
    kwargs: dict[str, object], match: str
) -> None:
    args: dict[str, object] = dict(
        left_schema=L, right_schema=R, left_key=["k"], right_key=["k"], left_time="t",
        right_time="t", lower_ms=0, upper_ms=1, left_prefix="l_", right_prefix="",
    )  # fmt: skip
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        IntervalJoin(**args)  # type: ignore[arg-type]


def test_interval_join_key_type_mismatch_or_non_time_column_raises_config_error() -> None:
    rs = pa.schema([("k", pa.string()), ("t", pa.int64())])
    with pytest.raises(ConfigError, match="left 'k' is int64, right 'k' is string"):
        IntervalJoin(L, rs, ["k"], ["k"], "t", "t", 0, 1, "l_")
    with pytest.raises(ConfigError, match="right time column 't2' has type double"):
        IntervalJoin(L, R.set(2, pa.field("t2", pa.float64())), ["k"], ["k"], "t", "t2", 0, 1)
    ls = pa.schema([("v", pa.list_(pa.int8())), ("t", pa.int64())])
    with pytest.raises(ConfigError, match="cannot be hash-joined"):
        IntervalJoin(ls, ls, ["v"], ["v"], "t", "t", 0, 1, "l_")


def test_interval_join_wrong_schema_or_port_is_rejected() -> None:
    op = make()
    with pytest.raises(SchemaMismatchError, match="right input"):
        op.process(left([1], [1]), 1)
    with pytest.raises(ValueError, match="port=2"):
        op.process(left([1], [1]), 2)


def test_interval_join_restore_of_foreign_state_raises_state_error() -> None:
    state = make().snapshot()
    with pytest.raises(StateError, match="expected"):
        make().restore({"left": state["left"]})
    state["right"] = state["left"]
    with pytest.raises(StateError, match="'right' has schema"):
        make().restore(state)


# -- random streams against DuckDB --------------------------------------------------------------


def scenario(seed: int, n: int, disorder: int, slack: int, string_keys: bool) -> list:
    """Interleaved (port, batch) and watermark steps; the watermark trails by ``slack``, or
    is sometimes the least time still to come (boundary cases: rows at exactly the watermark).

    Rows arrive up to ``disorder`` ms out of order; with ``slack < disorder`` some are late.
    """
    rng = np.random.default_rng(seed)
    base = np.sort(rng.integers(0, n + 1, n))
    ts = base + rng.integers(0, disorder + 1, n)
    port = rng.integers(0, 2, n)
    keys = rng.integers(0, 4, n).astype(object)
    keys[rng.random(n) < 0.05] = None
    if string_keys:
        keys = np.array([None if k is None else f"key-{k}" for k in keys], dtype=object)
    n_cuts = min(n - 1, int(rng.integers(0, 12)))
    cuts = np.sort(rng.choice(np.arange(1, max(n, 2)), size=n_cuts, replace=False))
    ktype = pa.string() if string_keys else pa.int64()
    steps: list = []
    tight = np.minimum.accumulate(np.append(ts, np.iinfo(np.int64).max)[::-1])[::-1]
    seen = -(2**62)
    for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), n], strict=True):
        ports = [0, 1] if rng.random() < 0.5 else [1, 0]
        for p in ports:
            sel = np.flatnonzero(port[lo:hi] == p) + lo
            if sel.size:
                schema = L if p == 0 else R
                arrays = [pa.array(keys[sel].tolist(), ktype), ts[sel], sel]
                steps.append(
                    (p, pa.record_batch(arrays, schema=schema.set(0, pa.field("k", ktype))))
                )
        seen = max(seen, int(ts[lo:hi].max()))
        if rng.random() < 0.3 and hi < n:  # the tightest watermark: the next row's time
            steps.append(("wm", int(tight[hi])))
        elif rng.random() < 0.8:
            steps.append(("wm", seen - slack))
    return steps


def drive(
    factory: Callable[[], IntervalJoin], steps: list, restore_at: int | None = None
) -> tuple[IntervalJoin, list[pa.RecordBatch], list[list[pa.RecordBatch]]]:
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
        t = arg.column("t").to_numpy()
        on_time[what].append(arg.filter(pa.array(t >= wm)) if wm is not None else arg)
    out += op.finish()
    return op, out, on_time


def rows(batches: list[pa.RecordBatch]) -> Counter[tuple]:
    return Counter(tuple(r.values()) for b in batches for r in b.to_pylist())


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    bounds=st.tuples(st.integers(-15, 15), st.integers(0, 20)),
    disorder=st.integers(0, 20),
    slack=st.integers(0, 20),
    string_keys=st.booleans(),
    restore_frac=st.floats(0, 1),
)
def test_interval_join_random_streams_match_duckdb_on_on_time_rows(
    seed: int,
    n: int,
    bounds: tuple[int, int],
    disorder: int,
    slack: int,
    string_keys: bool,
    restore_frac: float,
) -> None:
    lower, upper = bounds[0], bounds[0] + bounds[1]
    steps = scenario(seed, n, disorder, slack, string_keys)
    ktype = pa.string() if string_keys else pa.int64()
    ls, rs = L.set(0, pa.field("k", ktype)), R.set(0, pa.field("k", ktype))

    def factory() -> IntervalJoin:
        return IntervalJoin(ls, rs, ["k"], ["k"], "t", "t", lower, upper, "l_", "r_")

    op, out, on_time = drive(factory, steps)

    lt = pa.Table.from_batches(on_time[0], ls)
    rt = pa.Table.from_batches(on_time[1], rs)
    con = duckdb.connect()
    con.register("l", lt)
    con.register("r", rt)
    ref = con.execute(
        f"SELECT * FROM l JOIN r ON l.k = r.k AND r.t - l.t BETWEEN {lower} AND {upper}"
    ).fetchall()
    assert rows(out) == Counter(ref)
    fed = sum(arg.num_rows for what, arg in steps if what != "wm")
    assert op.late_rows == fed - len(lt) - len(rt)

    restored, out2, _ = drive(factory, steps, restore_at=int(restore_frac * len(steps)))
    assert rows(out2) == rows(out)
    assert (restored.late_rows, restored.null_rows) == (op.late_rows, op.null_rows)
    assert restored.state_rows == op.state_rows
