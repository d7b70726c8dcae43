"""Every expression function on a small batch, checked against DuckDB where it means the same."""

from __future__ import annotations

import datetime as dt
import math

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from engine.errors import ExpressionError
from ring0.expr import compile_expr

MS = 1
SEC = 1_000 * MS
DAY = 86_400 * SEC
TABLE = pa.table(
    {
        "i": pa.array([3, -7, None, 0, 12], pa.int64()),
        "f": pa.array([2.5, -2.5, None, 0.45, 1234.5678], pa.float64()),
        "s": pa.array(["abc", "  Héllo ", None, "", "xaxbx"], pa.string()),
        "t": pa.array(
            [
                19_800 * DAY + 3_600 * SEC + 61 * SEC + 500,  # 2024-03-18 01:01:01.500
                -1,  # 1969-12-31 23:59:59.999
                None,
                0,
                19_999 * DAY + 86_399_999,  # 2024-10-03 23:59:59.999
            ],
            pa.timestamp("ms"),
        ),
    }
)
BATCH = TABLE.to_batches()[0]


def duck(sql: str) -> list[object]:
    con = duckdb.connect()
    con.register("t", TABLE)
    return [row[0] for row in con.execute(f"SELECT {sql} FROM t").fetchall()]


def ours(text: str, batch: pa.RecordBatch = BATCH) -> list[object]:
    return compile_expr(text, batch.schema).evaluate(batch).to_pylist()


def same(a: list[object], b: list[object]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, float) or isinstance(y, float):
            if x is None or y is None:
                return False
            fx, fy = float(x), float(y)  # type: ignore[arg-type]
            if not (math.isclose(fx, fy, rel_tol=1e-12) or (math.isnan(fx) and math.isnan(fy))):
                return False
        elif x != y:
            return False
    return True


@pytest.mark.parametrize(
    ("text", "sql"),
    [
        ("abs(i)", None),
        ("abs(f)", None),
        ("round(f)", None),
        ("round(f, 2)", None),
        ("round(i, -1)", None),
        ("floor(f)", None),
        ("ceil(f)", None),
        ("floor(i)", None),
        ("sqrt(abs(f))", None),
        ("ln(abs(f) + 1)", None),
        ("log10(abs(i) + 1)", None),
        ("pow(f, 2)", None),
        ("power(i, 3)", None),
        ("greatest(i, f, 0)", None),
        ("least(i, 2)", None),
        ("greatest(s, 'b')", None),
        ("lower(s)", None),
        ("upper(s)", None),
        ("length(s)", None),
        ("trim(s)", None),
        ("ltrim(s)", None),
        ("rtrim(s)", None),
        ("trim(s, 'x')", None),
        ("substr(s, 2)", None),
        ("substr(s, 2, 2)", None),
        ("substr(s, 0, 2)", None),
        ("substr(s, -2)", None),
        ("substr(s, -3, 2)", None),
        ("substring(s, 9, 1)", None),
        ("starts_with(s, 'xa')", None),
        ("ends_with(s, 'o ')", None),
        ("contains(s, 'b')", None),
        ("concat(s, '-', i, f)", None),
        ("s || '-' || i", None),
        ("regexp_match(s, '^x.x')", "regexp_matches(s, '^x.x')"),
        ("regexp_matches(s, 'l+')", None),
        ("s like '%b%'", None),
        ("s ilike '%É%'", None),
        # DuckDB 2.0 cannot take epoch_ms of an Arrow timestamp[ms] column (TIMESTAMP_MS:
        # "Unimplemented type for cast (INT64 -> INT64)"); through TIMESTAMP it means the same.
        ("epoch_ms(t)", "epoch_ms(t::TIMESTAMP)"),
        ("year(t)", None),
        ("month(t)", None),
        ("day(t)", None),
        ("hour(t)", None),
        ("minute(t)", None),
        ("second(t)", None),
        ("date_trunc('year', t)", None),
        ("date_trunc('quarter', t)", None),
        ("date_trunc('month', t)", None),
        ("date_trunc('week', t)", None),
        ("date_trunc('day', t)", None),
        ("date_trunc('HOUR', t)", "date_trunc('hour', t)"),
        ("date_trunc('minute', t)", None),
        ("date_trunc('second', t)", None),
        ("to_timestamp(i * 1000)", "epoch_ms(i * 1000)"),
        ("if(i > 0, s, 'neg')", None),
        ("coalesce(s, 'none')", None),
        ("coalesce(f, i)", None),
        ("case when i > 0 then 'pos' when i < 0 then 'neg' else 'zero' end", None),
        ("i in (3, 0, null)", None),
        ("i between -7 and 3", None),
        ("cast(f as int64)", "cast(f as bigint)"),
        ("i::string", "i::varchar"),
        ("t >= '2024-01-01' and t < '2024-06-01'", None),
    ],
)
def test_function_matches_duckdb(text: str, sql: str | None) -> None:
    expected = duck(sql or text)
    got = ours(text)
    assert same(got, expected), f"{text}: ours {got} != duckdb {expected}"


def test_function_result_types() -> None:
    types = {
        "abs(i)": pa.int64(),
        "round(f, 1)": pa.float64(),
        "floor(i)": pa.int64(),
        "sqrt(i)": pa.float64(),
        "length(s)": pa.int64(),
        "regexp_match(s, 'a')": pa.bool_(),
        "to_timestamp(i)": pa.timestamp("ms"),
        "epoch_ms(t)": pa.int64(),
        "year(t)": pa.int64(),
        "date_trunc('day', t)": pa.timestamp("ms"),
        "greatest(i, f)": pa.float64(),
        "concat(s, i)": pa.string(),
    }
    for text, expected in types.items():
        assert compile_expr(text, BATCH.schema).type == expected, text


def test_function_math_of_bad_input_is_nan_or_inf_not_error() -> None:
    got = ours("sqrt(i)")
    assert got[0] == pytest.approx(math.sqrt(3)) and math.isnan(got[1]) and got[2] is None
    assert ours("ln(i)")[3] == -math.inf
    assert same(ours("i / 0"), [math.inf, -math.inf, None, math.nan, math.inf])
    assert same(ours("i / 0"), duck("i / 0"))


def test_function_greatest_least_skip_nulls() -> None:
    assert ours("greatest(i, null, 1)") == [3, 1, 1, 1, 12]
    assert ours("least(f, i)") == [2.5, -7.0, None, 0.0, 12.0]


def test_function_abs_overflow_raises() -> None:
    batch = pa.record_batch([pa.array([-(2**63)])], names=["v"])
    with pytest.raises(ExpressionError, match="at 0: cannot evaluate"):
        compile_expr("abs(v)", batch.schema).evaluate(batch)


def test_function_substr_negative_length_rejected() -> None:
    with pytest.raises(ExpressionError, match=r"at 13: substr\(\) length must be >= 0, got -1"):
        compile_expr("substr(s, 2, -1)", BATCH.schema)


def test_function_string_functions_keep_large_string() -> None:
    batch = pa.record_batch([pa.array(["Ab", None], pa.large_string())], names=["ls"])
    for text in ("upper(ls)", "trim(ls)", "substr(ls, 1, 1)", "concat(ls, 'x')"):
        e = compile_expr(text, batch.schema)
        assert e.type == pa.large_string(), text
    assert ours("lower(ls) || '!'", batch) == ["ab!", None]
    assert ours("length(ls)", batch) == [2, None]


# -- time ------------------------------------------------------------------------------------
def test_timestamp_functions_on_other_units_and_time_zones() -> None:
    us = [1_500_999, -1, None]  # 1.500999 s; 1 us before the epoch
    batch = pa.record_batch(
        [pa.array(us, pa.timestamp("us")), pa.array(us, pa.timestamp("us", "UTC"))],
        names=["u", "z"],
    )
    assert ours("epoch_ms(u)", batch) == [1_500, -1, None]  # floored, like DuckDB
    assert ours("epoch_ms(z)", batch) == [1_500, -1, None]
    assert ours("second(u)", batch) == [1, 59, None]
    assert ours("u::timestamp::int64", batch) == [1_500, -1, None]
    assert compile_expr("u + 1", batch.schema).type == pa.timestamp("us")
    assert ours("epoch_ms(u + 1)", batch) == [1_501, 0, None]
    assert ours("z > '1970-01-01 00:00:01'", batch) == [True, False, None]  # UTC assumed
    assert ours("date_trunc('second', z)", batch)[0] == dt.datetime(
        1970, 1, 1, 0, 0, 1, tzinfo=dt.UTC
    )


def test_timestamp_functions_on_dates() -> None:
    batch = pa.record_batch([pa.array([19_800, None], pa.date32())], names=["d"])
    assert ours("year(d)", batch) == [2024, None]
    assert ours("month(d)", batch) == [3, None]
    assert ours("day(d)", batch) == [18, None]
    assert ours("epoch_ms(d)", batch) == [19_800 * DAY, None]
    assert ours("date_trunc('month', d)", batch) == [dt.date(2024, 3, 1), None]
    assert ours("d < '2024-03-19'", batch) == [True, None]
    with pytest.raises(ExpressionError, match="at 5: hour\\(\\) needs a timestamp, got date32"):
        compile_expr("hour(d)", batch.schema)


def test_timestamp_to_timestamp_requires_integer_milliseconds() -> None:
    assert ours("to_timestamp(1500)")[0] == dt.datetime(1970, 1, 1, 0, 0, 1, 500_000)
    with pytest.raises(ExpressionError, match="at 13: to_timestamp\\(\\) needs integer"):
        compile_expr("to_timestamp(f)", BATCH.schema)


@pytest.mark.parametrize("digits", [0, 1, 2, 3, -1, -2, 6])
def test_round_of_doubles_matches_duckdb_on_their_exact_values(digits: int) -> None:
    """Seen: round(975.15, 1) gave 975.2; the double is 975.1499..., DuckDB gives 975.1."""
    rng = np.random.default_rng(digits + 7)
    values = np.concatenate(
        [
            np.round(rng.uniform(-2000, 2000, 40_000), 2),  # prices: ties are frequent
            np.round(rng.uniform(-5, 5, 10_000), 3),
            rng.normal(0, 1e9, 2_000),
            [975.15, 1.005, 0.125, 2.5, -2.5, 0.5, -0.0, 1e300, -1e300, 5e-324, 2.0**53 + 1],
        ]
    )
    batch = pa.record_batch({"x": pa.array(values, pa.float64())})
    got = compile_expr(f"round(x, {digits})", batch.schema).evaluate(batch).to_numpy()
    con = duckdb.connect()
    con.register("t", pa.table(batch))
    want = con.execute(f"SELECT round(x, {digits}) AS r FROM t").fetchnumpy()["r"]
    differ = np.flatnonzero(got != want)
    assert differ.size == 0, (values[differ][:5], got[differ][:5], want[differ][:5])
    assert compile_expr("round(x, 1)", batch.schema).evaluate(
        pa.record_batch({"x": pa.array([975.15, None])})
    ).to_pylist() == [975.1, None]
