"""Decimal aggregates: exact sums (decimal128(38, s) / decimal256(76, s)), float64 averages,
min/max; group-by in both emit modes, tumbling windows and changelog input against DuckDB;
overflow; snapshot/restore."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from engine.errors import ConfigError, DataError
from ring0.operators import dense
from ring0.operators.aggregates import Plan
from ring0.operators.groupby import GroupByAggregate
from ring0.operators.window import WindowAggregate, WindowSpec
from tests.tables import assert_tables_match
from tests.unit.ring0.test_window import aggs, consolidate, ipc_round_trip, resumed, rows

MONEY = pa.decimal128(12, 2)
NUMERIC = pa.decimal128(38, 10)  # PostgreSQL's unconstrained numeric, as the CDC source emits it
TEXTS = ("count(x)", "sum(x)", "avg(x)", "min(x)", "max(x)")
REFERENCE = (
    "count(x) as count_x, sum(x) as sum_x, avg(x) as avg_x, min(x) as min_x, max(x) as max_x"
)


def schema(t: pa.DataType, change: bool = False) -> pa.Schema:
    fields = [("ts", pa.int64()), ("k", pa.string()), ("x", t)]
    return pa.schema(fields + ([("_change", pa.int8())] if change else []))


def dec(units: Sequence[int | None], t: pa.DataType) -> pa.Array:
    """Decimals of type ``t`` from their values in units of the last digit (exact)."""
    return pa.array([None if u is None else Decimal(f"{u}e-{t.scale}") for u in units], t)


def batch(ts: Sequence[int], k: Sequence, units: Sequence, t: pa.DataType) -> pa.RecordBatch:
    return pa.record_batch(
        [pa.array(ts, pa.int64()), pa.array(k, pa.string()), dec(units, t)], schema=schema(t)
    )


def random_units(rng: np.random.Generator, n: int, magnitude: int) -> list[int | None]:
    """``n`` values in ``(-magnitude, magnitude)`` (units of the last digit), about 1 in 8 null."""
    out: list[int | None] = []
    for _ in range(n):
        u = int(rng.integers(0, 2**62)) * magnitude // 2**62  # exact beyond 2**63
        out.append(None if rng.random() < 0.125 else (-u if rng.random() < 0.5 else u))
    return out


def random_batches(seed: int, t: pa.DataType, magnitude: int) -> list[pa.RecordBatch]:
    rng = np.random.default_rng(seed)
    out = []
    for n in rng.integers(0, 40, 25):
        ts = rng.integers(0, 50, n).tolist()
        k = rng.choice(["a", "b", "c", "d", None], n).tolist()
        k = [None if v is None else str(v) for v in k]
        out.append(batch(ts, k, random_units(rng, int(n), magnitude), t))
    return out


def by_key(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys])


# (type, largest value in units of the last digit): the sums stay below 38 digits, but some
# merges of (38, 10) partials cannot be proven safe from their min/max, so the overflow check
# runs on them (and must not fire).
CASES = [(MONEY, 10**12), (NUMERIC, 10**36)]


# -- types -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "sum_type", "min_type"),
    [
        (MONEY, pa.decimal128(38, 2), MONEY),
        (NUMERIC, NUMERIC, NUMERIC),
        (pa.decimal256(50, 5), pa.decimal256(76, 5), pa.decimal256(50, 5)),
        (pa.decimal64(18, 3), pa.decimal128(38, 3), pa.decimal128(18, 3)),
        (pa.decimal32(9, 0), pa.decimal128(38, 0), pa.decimal128(9, 0)),
    ],
)
def test_plan_decimal_sum_widens_to_most_digits_and_avg_is_float64(
    t: pa.DataType, sum_type: pa.DataType, min_type: pa.DataType
) -> None:
    plan = Plan(aggs(*TEXTS, "count_distinct(x)", "max_by(x, x) as best"), schema(t))
    types = {f.name: f.type for f in plan.output_fields}
    assert types == {
        "count_x": pa.int64(),
        "sum_x": sum_type,
        "avg_x": pa.float64(),
        "min_x": min_type,
        "max_x": min_type,
        "count_distinct_x": pa.int64(),
        "best": min_type,
    }


def test_plan_sum_of_string_still_refused_naming_decimal() -> None:
    with pytest.raises(ConfigError, match="integer, floating-point or decimal column; 'k'"):
        Plan(aggs("sum(k)"), schema(MONEY))


def test_decimal32_and_decimal64_columns_sum_as_decimal128() -> None:
    t = pa.decimal64(18, 3)
    b = pa.record_batch(
        [pa.array([1, 2, 3]), pa.array(["a", "a", "b"]), dec([1500, -250, None], t)],
        schema=schema(t),
    )
    op = GroupByAggregate(["k"], aggs(*TEXTS), schema(t), emit="close")
    op.process(b)
    assert rows(op.finish()) == [
        {
            "k": "a",
            "count_x": 2,
            "sum_x": Decimal("1.250"),
            "avg_x": 0.625,
            "min_x": Decimal("-0.250"),
            "max_x": Decimal("1.500"),
        },
        {"k": "b", "count_x": 0, "sum_x": None, "avg_x": None, "min_x": None, "max_x": None},
    ]


def test_dense_group_declines_decimal_columns() -> None:
    table = pa.table({"k": pa.array([0, 1, 0]), "x": dec([1, 2, 3], MONEY)})
    assert dense.dense_group(table, ["k"], {("x", "sum"): "x_sum"}) is None


# -- against DuckDB ----------------------------------------------------------------------------


@pytest.mark.parametrize(("t", "magnitude"), CASES, ids=["12_2", "38_10"])
@pytest.mark.parametrize("emit", ["close", "update"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_groupby_decimal_matches_duckdb_exactly(
    t: pa.DataType, magnitude: int, emit: str, seed: int
) -> None:
    batches = random_batches(seed, t, magnitude)
    op = GroupByAggregate(["k"], aggs(*TEXTS), schema(t), emit=emit)
    out = [o for b in batches for o in op.process(b)] + op.finish()
    everything = pa.Table.from_batches(batches, schema(t))  # noqa: F841 (read by DuckDB)
    want = duckdb.sql(f"select k, {REFERENCE} from everything group by k").to_arrow_table()
    if emit == "update":
        got = pa.Table.from_pylist(consolidate(out), schema=want.schema)
    else:
        got = pa.Table.from_batches(out, op.output_schema)
    assert_tables_match(by_key(got, ["k"]), by_key(want, ["k"]))


@pytest.mark.parametrize(("t", "magnitude"), CASES, ids=["12_2", "38_10"])
@pytest.mark.parametrize("emit", ["close", "update"])
def test_window_tumbling_decimal_matches_duckdb_exactly(
    t: pa.DataType, magnitude: int, emit: str
) -> None:
    batches = random_batches(7, t, magnitude)
    spec = WindowSpec("tumbling", size_ms=10)
    op = WindowAggregate(["k"], "ts", spec, aggs(*TEXTS), schema(t), emit=emit)
    out = [o for b in batches for o in op.process(b)] + op.finish()
    everything = pa.Table.from_batches(batches, schema(t))  # noqa: F841 (read by DuckDB)
    want = duckdb.sql(
        "select ts // 10 * 10 as window_start, ts // 10 * 10 + 10 as window_end, k, "
        f"{REFERENCE} from everything group by all"
    ).to_arrow_table()
    if emit == "update":
        got = pa.Table.from_pylist(consolidate(out), schema=want.schema)
    else:
        got = pa.Table.from_batches(out, op.output_schema)
    keys = ["window_start", "k"]
    assert_tables_match(by_key(got, keys), by_key(want, keys))


# -- changelog input (rows weighted by _change) ----------------------------------------------


def changelog(seed: int, t: pa.DataType, magnitude: int) -> tuple[list[pa.RecordBatch], list]:
    """Random inserts, and retractions of rows inserted before; also the rows left at the end."""
    rng = np.random.default_rng(seed)
    live: list[tuple[str | None, int | None]] = []
    batches = []
    for _ in range(30):
        k, units, change = [], [], []
        for _ in range(int(rng.integers(0, 12))):
            if live and rng.random() < 0.4:
                key, u = live.pop(int(rng.integers(0, len(live))))
                sign = -1
            else:
                name = rng.choice(["a", "b", "c", "null"]).item()
                key, u = (None if name == "null" else name), random_units(rng, 1, magnitude)[0]
                live.append((key, u))
                sign = 1
            k.append(key)
            units.append(u)
            change.append(sign)
        arrays = [pa.array([0] * len(k), pa.int64()), pa.array(k, pa.string()), dec(units, t)]
        arrays.append(pa.array(change, pa.int8()))
        batches.append(pa.record_batch(arrays, schema=schema(t, change=True)))
    return batches, live


@pytest.mark.parametrize(("t", "magnitude"), CASES, ids=["12_2", "38_10"])
@pytest.mark.parametrize("emit", ["close", "update"])
@pytest.mark.parametrize("seed", [3, 4])
def test_groupby_changelog_decimal_sum_equals_duckdb_over_rows_left(
    t: pa.DataType, magnitude: int, emit: str, seed: int
) -> None:
    batches, live = changelog(seed, t, magnitude)
    texts = ("count", "sum(x)", "avg(x)")
    op = GroupByAggregate(["k"], aggs(*texts), schema(t, change=True), emit=emit)
    out = [o for b in batches for o in op.process(b)] + op.finish()
    remaining = pa.table(  # noqa: F841 (read by DuckDB)
        {"k": pa.array([k for k, _ in live], pa.string()), "x": dec([u for _, u in live], t)}
    )
    want = duckdb.sql(
        'select k, count(*) as "count", sum(x) as sum_x, avg(x) as avg_x from remaining group by k'
    ).to_arrow_table()
    if emit == "update":
        got = pa.Table.from_pylist(consolidate(out), schema=want.schema)
    else:
        got = pa.Table.from_batches(out, op.output_schema)
    assert_tables_match(by_key(got, ["k"]), by_key(want, ["k"]))


def test_groupby_changelog_decimal_retraction_of_only_value_leaves_null_not_zero() -> None:
    t = schema(MONEY, change=True)

    def cl(k: list, units: list, change: list) -> pa.RecordBatch:
        arrays = [pa.array([0] * len(k)), pa.array(k), dec(units, MONEY), pa.array(change)]
        return pa.record_batch(arrays, schema=t)

    op = GroupByAggregate(["k"], aggs("count", "sum(x)"), t)
    op.process(cl(["a", "a"], [-505, None], [1, 1]))
    out = rows(op.process(cl(["a"], [-505], [-1])))
    assert out == [
        {"k": "a", "count": 1, "sum_x": None, "_change": 1},
        {"k": "a", "count": 2, "sum_x": Decimal("-5.05"), "_change": -1},
    ]


@pytest.mark.parametrize("change", [2, 0, -3])
def test_groupby_changelog_decimal_weight_other_than_one_raises_data_error(change: int) -> None:
    t = schema(MONEY, change=True)
    arrays = [pa.array([0, 0]), pa.array(["a", "a"]), dec([100, 200], MONEY)]
    b = pa.record_batch([*arrays, pa.array([1, change], pa.int8())], schema=t)
    op = GroupByAggregate(["k"], aggs("sum(x)", "avg(x) as mean"), t)
    with pytest.raises(DataError, match=rf"_change is {change} .*'sum\(x\)', 'avg\(x\) as mean'"):
        op.process(b)


def test_groupby_changelog_integer_sum_beside_count_still_takes_any_weight() -> None:
    t = pa.schema([("k", pa.string()), ("v", pa.int64()), ("x", MONEY), ("_change", pa.int8())])
    b = pa.record_batch(
        [pa.array(["a"]), pa.array([3]), dec([100], MONEY), pa.array([2], pa.int8())], schema=t
    )
    op = GroupByAggregate(["k"], aggs("sum(v)", "count(x)"), t, emit="close")
    op.process(b)
    assert rows(op.finish()) == [{"k": "a", "sum_v": 6, "count_x": 2}]


# -- overflow ----------------------------------------------------------------------------------

NINES = 10**38 - 1  # the largest decimal128 sum, in units of the last digit


@pytest.mark.parametrize("emit", ["close", "update"])
@pytest.mark.parametrize("split", [False, True], ids=["one_batch", "two_batches"])
@pytest.mark.parametrize("sign", [1, -1])
def test_groupby_decimal_sum_of_38_nines_is_exact_and_one_more_raises_data_error(
    emit: str, split: bool, sign: int
) -> None:
    half = NINES // 2  # half + (half + 1) is 38 nines
    units = [sign * half, sign * (half + 1), sign * 1]

    def run(values: list[int]) -> list[pa.RecordBatch]:
        op = GroupByAggregate(["k"], aggs("sum(x) as total", "avg(x)"), schema(NUMERIC), emit=emit)
        parts = [values[:1], values[1:]] if split else [values]
        out = [
            o for p in parts for o in op.process(batch([0] * len(p), ["a"] * len(p), p, NUMERIC))
        ]
        return out + op.finish()

    (last,) = [r for r in rows(run(units[:2])) if r.get("_change", 1) == 1][-1:]
    assert last["total"] == Decimal(f"{sign * NINES}e-10")
    with pytest.raises(
        DataError, match=r"aggregate 'sum\(x\) as total', 'avg\(x\)': the sum of 'x'"
    ):
        run(units)


@pytest.mark.parametrize("emit", ["close", "update"])
def test_groupby_decimal_sum_that_wraps_128_bits_to_zero_raises_data_error(emit: str) -> None:
    t = pa.decimal128(38, 0)
    units = [2**126] * 4  # 2**128: Arrow's unchecked 128-bit sum gives 0
    op = GroupByAggregate(["k"], aggs("sum(x)"), schema(t), emit=emit)
    with pytest.raises(DataError, match=r"more than decimal128\(38, 0\) holds \(38 digits\)"):
        op.process(batch([0] * 4, ["a"] * 4, units, t))
        op.finish()


def test_groupby_decimal256_sum_beyond_76_digits_raises_data_error() -> None:
    t = pa.decimal256(76, 0)
    op = GroupByAggregate(["k"], aggs("sum(x)"), schema(t), emit="close")
    op.process(batch([0, 0], ["a", "b"], [10**76 - 1, 10**76 - 1], t))
    op.process(batch([0], ["b"], [-1], t))
    op.process(batch([0], ["a"], [1], t))
    with pytest.raises(DataError, match=r"more than decimal256\(76, 0\) holds \(76 digits\)"):
        op.finish()


def test_groupby_decimal_sum_with_negative_scale_checks_overflow_in_units() -> None:
    t = pa.decimal128(38, -2)  # PostgreSQL 15's numeric(p, -2); pa.array refuses such values

    def col(units: list[int]) -> pa.Array:
        data = b"".join(u.to_bytes(16, "little", signed=True) for u in units)
        return pa.Array.from_buffers(t, len(units), [None, pa.py_buffer(data)])

    def total(units: list[int]) -> object:
        op = GroupByAggregate(["k"], aggs("sum(x)"), schema(t), emit="close")
        op.process(pa.record_batch([pa.array([0, 0]), pa.array(["a", "a"]), col(units)], schema(t)))
        return op.finish()[0].column("sum_x")[0].as_py()

    assert total([NINES, -5]) == Decimal(f"{NINES - 5}e2")
    with pytest.raises(DataError, match=r"more than decimal128\(38, -2\) holds"):
        total([NINES, 5])


def test_groupby_changelog_decimal_sum_overflow_raises_data_error() -> None:
    t = schema(NUMERIC, change=True)
    arrays = [pa.array([0, 0]), pa.array(["a", "a"]), dec([-NINES, -1], NUMERIC)]
    b = pa.record_batch([*arrays, pa.array([1, 1], pa.int8())], schema=t)
    op = GroupByAggregate(["k"], aggs("sum(x)"), t)
    with pytest.raises(DataError, match=r"aggregate 'sum\(x\)'"):
        op.process(b)


def test_window_decimal_sum_overflow_raises_data_error() -> None:
    op = WindowAggregate(
        ["k"], "ts", WindowSpec("tumbling", size_ms=10), aggs("sum(x)"), schema(NUMERIC)
    )
    op.process(batch([1], ["a"], [NINES], NUMERIC))
    op.process(batch([2], ["a"], [NINES], NUMERIC))
    with pytest.raises(DataError, match=r"aggregate 'sum\(x\)'"):
        op.on_watermark(10)


# -- snapshot / restore ------------------------------------------------------------------------


@pytest.mark.parametrize("emit", ["close", "update"])
@pytest.mark.parametrize("change", [False, True], ids=["rows", "changelog"])
def test_groupby_decimal_snapshot_restore_continues_identically(emit: str, change: bool) -> None:
    if change:
        batches, _ = changelog(5, NUMERIC, 10**35)
        texts: tuple[str, ...] = ("count", "sum(x)", "avg(x)")
    else:
        batches, texts = random_batches(5, NUMERIC, 10**35), (*TEXTS, "count_distinct(x)")
    t = batches[0].schema

    def make() -> GroupByAggregate:
        return GroupByAggregate(["k"], aggs(*texts), t, emit=emit)

    whole = make()
    expected = [o for b in batches for o in whole.process(b)] + whole.finish()
    first = make()
    out = [o for b in batches[:17] for o in first.process(b)]
    state = ipc_round_trip(first.snapshot())
    assert NUMERIC in state["groups"].schema.types
    second = make()
    second.restore(state)
    out += [o for b in batches[17:] for o in second.process(b)] + second.finish()
    assert rows(out) == rows(expected)


@pytest.mark.parametrize("emit", ["close", "update"])
def test_window_decimal_snapshot_restore_continues_identically(emit: str) -> None:
    batches = random_batches(6, MONEY, 10**12)
    steps: list = []
    for i, b in enumerate(batches):
        steps += [b, i * 2]

    def make() -> WindowAggregate:
        spec = WindowSpec("tumbling", size_ms=10)
        return WindowAggregate(["k"], "ts", spec, aggs(*TEXTS), schema(MONEY), emit=emit)

    whole = make()
    expected = [
        o
        for s in steps
        for o in (whole.on_watermark(s) if isinstance(s, int) else whole.process(s))
    ]
    expected += whole.finish()
    assert rows(resumed(make, steps, 21)) == rows(expected)
