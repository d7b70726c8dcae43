"""Aggregate specs: parsing, validation, and partial/merge/final against DuckDB."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError
from ring0.operators.aggregate_spec import AggregateSpec, parse_aggregate
from ring0.operators.aggregates import Plan
from ring0.operators.keys import rows_table

SCHEMA = pa.schema([("k", pa.string()), ("x", pa.int32()), ("y", pa.float64()), ("s", pa.string())])


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("count", AggregateSpec("count", None, None, "count")),
        ("count(*)", AggregateSpec("count", None, None, "count")),
        ("count(x)", AggregateSpec("count", "x", None, "count_x")),
        ("sum(price)", AggregateSpec("sum", "price", None, "sum_price")),
        ("min(x)", AggregateSpec("min", "x", None, "min_x")),
        ("max( x )", AggregateSpec("max", "x", None, "max_x")),
        ("avg(x)", AggregateSpec("avg", "x", None, "avg_x")),
        ("count_distinct(x)", AggregateSpec("count_distinct", "x", None, "count_distinct_x")),
        ("max_by(x, y)", AggregateSpec("max_by", "x", "y", "max_by_x")),
        ("min_by(x,y)", AggregateSpec("min_by", "x", "y", "min_by_x")),
        ("sum(price) as total", AggregateSpec("sum", "price", None, "total")),
        ("count AS n", AggregateSpec("count", None, None, "n")),
        ("count(*) as n", AggregateSpec("count", None, None, "n")),
    ],
)
def test_parse_aggregate_valid_text_gives_spec_with_default_or_alias_name(
    text: str, spec: AggregateSpec
) -> None:
    assert parse_aggregate(text) == spec


@pytest.mark.parametrize(
    "text",
    [
        "median(x)",
        "sum",
        "sum()",
        "sum(*)",
        "sum(x, y)",
        "max_by(x)",
        "count(x",
        "sum(x) as",
        "sum(x) total",
        "",
        "max_by(*, y)",
    ],
)
def test_parse_aggregate_bad_text_raises_config_error_listing_functions(text: str) -> None:
    with pytest.raises(ConfigError, match="is not an aggregate") as info:
        parse_aggregate(text)
    assert repr(text) in str(info.value) and "count_distinct(x)" in str(info.value)


def test_parse_aggregate_of_an_expression() -> None:
    a = parse_aggregate("sum(price * qty) as notional")
    assert (a.fn, a.column, a.name) == ("sum", "price * qty", "notional")
    a = parse_aggregate("count(DISTINCT user)")
    assert (a.fn, a.column, a.name) == ("count_distinct", "user", "count_distinct_user")
    a = parse_aggregate("max_by(concat(a, ','), if(b > 1, b, 0)) AS best")
    assert (a.fn, a.column, a.by, a.name) == ("max_by", "concat(a, ',')", "if(b > 1, b, 0)", "best")
    with pytest.raises(ConfigError, match=r"needs a name: avg\(a b\) as <name>"):
        parse_aggregate("avg(a b)")


@pytest.mark.parametrize(
    ("aggregate", "message"),
    [
        (AggregateSpec("sum", "s"), "sum needs an integer, floating-point or decimal column; 's'"),
        (AggregateSpec("avg", "nope"), "column 'nope' is not in the input"),
        (AggregateSpec("max_by", "x", "nope"), "column 'nope' is not in the input"),
    ],
)
def test_plan_bad_aggregate_for_schema_raises_config_error(
    aggregate: AggregateSpec, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Plan([aggregate], SCHEMA)


def test_plan_min_of_a_type_without_order_raises_config_error() -> None:
    schema = pa.schema([("d", pa.duration("ms")), ("l", pa.list_(pa.int64()))])
    for text, column in (("min(d)", "'d'"), ("count_distinct(l)", "'l'"), ("max_by(d, l)", "'d'")):
        with pytest.raises(ConfigError, match=f"column {column} of type .* cannot be compared"):
            Plan([parse_aggregate(text)], schema)


def test_plan_no_aggregates_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="at least one aggregate"):
        Plan([], SCHEMA)


def test_aggregate_spec_unknown_function_or_missing_column_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="'median' is not one of"):
        AggregateSpec("median", "x")
    with pytest.raises(ConfigError, match="'sum' needs a column"):
        AggregateSpec("sum")
    with pytest.raises(ConfigError, match="needs a 'by' column"):
        AggregateSpec("max_by", "x")


def test_plan_output_types_follow_function_and_input_type() -> None:
    texts = [
        "count",
        "sum(x)",
        "sum(y)",
        "avg(x)",
        "min(s)",
        "max(x)",
        "count_distinct(s)",
        "max_by(s, y)",
    ]
    plan = Plan([parse_aggregate(t) for t in texts], SCHEMA)
    assert [f.type for f in plan.output_fields] == [
        pa.int64(),
        pa.int64(),
        pa.float64(),
        pa.float64(),
        pa.string(),
        pa.int32(),
        pa.int64(),
        pa.string(),
    ]


def _aggregate(texts: list[str], batches: list[pa.RecordBatch]) -> dict[str, dict]:
    """Partial per batch, merged: {key: {name: value}}."""
    plan = Plan([parse_aggregate(t) for t in texts], SCHEMA)
    parts = [plan.partial(rows_table(b, ["k"], plan), ["__k0"]) for b in batches]
    merged, _ = plan.merge(pa.concat_tables(parts), ["__k0"])
    values = plan.finalize(merged)
    keys = merged.column("__k0").to_pylist()
    return {k: {n: v[i].as_py() for n, v in values.items()} for i, k in enumerate(keys)}


def _batch(rows: dict) -> pa.RecordBatch:
    return pa.record_batch(rows, schema=SCHEMA)


def test_max_by_ties_take_smallest_x_whatever_the_arrival_order() -> None:
    rows = {"k": ["a"] * 4, "x": [5, 2, 9, 1], "y": [3.0, 7.0, 7.0, 1.0], "s": ["p", "q", "r", "s"]}
    forward = _aggregate(["max_by(x, y)", "min_by(x, y)", "max_by(s, y)"], [_batch(rows)])
    reverse = {c: v[::-1] for c, v in rows.items()}
    split = [
        _batch({c: v[2:] for c, v in reverse.items()}),
        _batch({c: v[:2] for c, v in reverse.items()}),
    ]
    assert forward == _aggregate(["max_by(x, y)", "min_by(x, y)", "max_by(s, y)"], split)
    assert forward["a"] == {"max_by_x": 2, "min_by_x": 1, "max_by_s": "q"}


def test_max_by_null_y_skipped_and_all_null_gives_null() -> None:
    rows = {"k": ["a", "a", "b"], "x": [1, 2, 3], "y": [None, 0.5, None], "s": ["", "", ""]}
    out = _aggregate(["max_by(x, y)"], [_batch(rows)])
    assert out == {"a": {"max_by_x": 2}, "b": {"max_by_x": None}}


def test_count_distinct_counts_non_null_values_across_batches() -> None:
    b1 = _batch({"k": ["a", "a", "a"], "x": [1, 1, None], "y": [0.0] * 3, "s": ["u", "v", "u"]})
    b2 = _batch({"k": ["a", "b", "b"], "x": [2, None, None], "y": [0.0] * 3, "s": ["v", None, "w"]})
    out = _aggregate(["count_distinct(x)", "count_distinct(s)"], [b1, b2])
    assert out == {
        "a": {"count_distinct_x": 2, "count_distinct_s": 2},
        "b": {"count_distinct_x": 0, "count_distinct_s": 1},
    }


def test_avg_and_count_column_skip_nulls_all_null_gives_null() -> None:
    b = _batch({"k": ["a", "a", "b"], "x": [2, None, None], "y": [1.0, 3.0, None], "s": [""] * 3})
    out = _aggregate(["avg(x)", "avg(y)", "count(x)", "count", "sum(x)"], [b])
    assert out["a"] == {"avg_x": 2.0, "avg_y": 2.0, "count_x": 1, "count": 2, "sum_x": 2}
    assert out["b"] == {"avg_x": None, "avg_y": None, "count_x": 0, "count": 1, "sum_x": None}


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), cuts=st.integers(1, 6))
def test_plan_partials_merged_in_any_split_match_duckdb(seed: int, n: int, cuts: int) -> None:
    rng = np.random.default_rng(seed)
    rows = pa.table(
        {
            "k": rng.choice(["a", "b", "c", "d"], n).tolist(),
            "x": pa.array(rng.integers(-5, 5, n), pa.int32()),
            "y": pa.array(rng.integers(0, 4, n).astype(np.float64), mask=rng.random(n) < 0.2),
            "s": rng.choice(["p", "q", "r"], n).tolist(),
        },
        schema=SCHEMA,
    )
    bounds = sorted({0, n, *rng.integers(0, n, cuts).tolist()})
    batches = [
        rows.slice(a, b - a).combine_chunks().to_batches()[0]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        if b > a
    ]
    texts = [
        "count",
        "sum(x)",
        "sum(y)",
        "min(s)",
        "max(y)",
        "avg(y)",
        "count_distinct(x)",
        "max_by(x, y)",
        "min_by(s, x)",
    ]
    ours = _aggregate(texts, batches)
    ref = duckdb.sql(
        """
        select k, count(*) c, sum(x)::bigint sx, sum(y) sy, min(s) mn, max(y) mx, avg(y) av,
          count(distinct x) cd,
          min(x) filter (where y = (select max(y) from rows r2 where r2.k = rows.k)) mb,
          min(s) filter (where x = (select min(x) from rows r2 where r2.k = rows.k)) nb
        from rows group by k
        """
    ).to_arrow_table()
    for r in ref.to_pylist():
        got = ours[r["k"]]
        assert got["count"] == r["c"] and got["sum_x"] == r["sx"] and got["min_s"] == r["mn"]
        assert got["sum_y"] == r["sy"] and got["max_y"] == r["mx"]
        assert got["count_distinct_x"] == r["cd"]
        assert got["max_by_x"] == r["mb"] and got["min_by_s"] == r["nb"]
        assert (got["avg_y"] is None) == (r["av"] is None)
        if r["av"] is not None:
            assert got["avg_y"] == pytest.approx(r["av"])
    assert len(ours) == ref.num_rows
