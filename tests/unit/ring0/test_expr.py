"""Expression language: parsing and precedence, compile-time errors, types, null semantics."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from engine.errors import ExpressionError
from ring0.expr import compile_expr, split_alias
from ring0.expr import nodes as n
from ring0.expr.parser import parse

SCHEMA = pa.schema([("auction", pa.int64()), ("bidder", pa.int64()), ("price", pa.float64())])
S = pa.schema(
    [
        ("a", pa.int64()),
        ("b", pa.int64()),
        ("x", pa.float64()),
        ("s", pa.string()),
        ("p", pa.bool_()),
        ("q", pa.bool_()),
        ("i8", pa.int8()),
        ("ls", pa.large_string()),
        ("ts", pa.timestamp("ms")),
    ]
)
BATCH = pa.record_batch(
    [
        pa.array([7, -7, None, 0]),
        pa.array([2, 2, 3, None]),
        pa.array([1.5, -2.5, None, 4.0]),
        pa.array(["ab", "Cd", None, ""]),
        pa.array([True, False, None, True]),
        pa.array([None, None, None, False]),
        pa.array([1, -1, None, 127], pa.int8()),
        pa.array(["x", None, "z", "w"], pa.large_string()),
        pa.array([0, 1_000, None, 86_400_000], pa.timestamp("ms")),
    ],
    schema=S,
)


def ev(text: str, batch: pa.RecordBatch = BATCH) -> list[object]:
    return compile_expr(text, batch.schema).evaluate(batch).to_pylist()


def sexpr(node: n.Node) -> str:
    """The tree as a fully parenthesised string, for precedence tests."""
    if isinstance(node, n.Literal):
        return repr(node.value)
    if isinstance(node, n.Column):
        return node.name
    if isinstance(node, n.Unary):
        return f"({node.op} {sexpr(node.operand)})"
    if isinstance(node, n.Binary):
        return f"({sexpr(node.left)} {node.op} {sexpr(node.right)})"
    if isinstance(node, n.Call):
        return f"{node.name}({', '.join(sexpr(a) for a in node.args)})"
    if isinstance(node, n.Cast):
        return f"({sexpr(node.operand)}::{node.type_name})"
    if isinstance(node, n.IsNull):
        return f"({sexpr(node.operand)} is {'not ' if node.negated else ''}null)"
    if isinstance(node, n.Between):
        return f"({sexpr(node.operand)} between {sexpr(node.low)} {sexpr(node.high)})"
    if isinstance(node, n.InList):
        return f"({sexpr(node.operand)} in {[sexpr(i) for i in node.items]})"
    if isinstance(node, n.Like):
        return f"({sexpr(node.operand)} like {sexpr(node.pattern)})"
    raise AssertionError(node)


def errmsg(text: str, schema: pa.Schema = S) -> str:
    with pytest.raises(ExpressionError) as info:
        compile_expr(text, schema)
    return str(info.value)


# -- parsing and precedence ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("not a = b and c or d", "(((not (a = b)) and c) or d)"),
        ("a or b and c", "(a or (b and c))"),
        ("not not a", "(not (not a))"),
        ("a + b * c", "(a + (b * c))"),
        ("a - b - c", "((a - b) - c)"),
        ("a / b // c % d", "(((a / b) // c) % d)"),
        ("-a * b", "((- a) * b)"),
        ("-a::int64", "(- (a::int64))"),
        ("- -a", "(- (- a))"),
        ("a || b = c", "((a || b) = c)"),
        ("a + 1 < b * 2", "((a + 1) < (b * 2))"),
        ("x between 1 and 2 and y", "((x between 1 2) and y)"),
        ("x is not null or y is null", "((x is not null) or (y is null))"),
        ("a <> b", "(a != b)"),
        ("a == b", "(a = b)"),
        ("f(a, b + 1)", "f(a, (b + 1))"),
        ('"my col" + 1', "(my col + 1)"),
        ("'it''s'", '"it\'s"'),
        ("1e3 + .5 + 2.5E-1", "((1000.0 + 0.5) + 0.25)"),
        ("CAST(a AS Double)", "(a::double)"),
    ],
)
def test_parse_precedence_gives_sql_tree(text: str, tree: str) -> None:
    assert sexpr(parse(text)) == tree


def test_parse_not_binds_looser_than_comparison_tighter_than_and() -> None:
    node = parse("not a = b and c or d")
    assert isinstance(node, n.Binary) and node.op == "or"
    assert isinstance(node.left, n.Binary) and node.left.op == "and"
    negation = node.left.left
    assert isinstance(negation, n.Unary) and negation.op == "not"
    assert isinstance(negation.operand, n.Binary) and negation.operand.op == "="


def test_parse_keywords_case_insensitive_columns_case_sensitive() -> None:
    schema = pa.schema([("A", pa.int64()), ("a", pa.int64())])
    batch = pa.record_batch([pa.array([1, 2]), pa.array([10, 20])], schema=schema)
    assert ev("A + a", batch) == [11, 22]
    assert ev("A BETWEEN 1 AND 1 OR a IS NULL", batch) == [True, False]
    assert ev("ABS(-A)", batch) == [1, 2]


def test_evaluate_unary_minus_and_precedence_values() -> None:
    assert ev("-a * 2 + 1") == [-13, 15, None, 1]
    assert ev("2 - -a") == [9, -5, None, 2]
    assert ev("-(a + 1)") == [-8, 6, None, -1]


def test_evaluate_slash_is_float_division_double_slash_truncates() -> None:
    e = compile_expr("a / b", S)
    assert e.type == pa.float64()
    assert e.evaluate(BATCH).to_pylist() == [3.5, -3.5, None, None]
    e = compile_expr("a // b", S)
    assert e.type == pa.int64()
    assert e.evaluate(BATCH).to_pylist() == [3, -3, None, None]  # toward zero, like DuckDB
    assert ev("a % b") == [1, -1, None, None]  # sign of the dividend
    assert ev("x // 1") == [1.0, -2.0, None, 4.0]
    assert ev("x % 1") == [0.5, -0.5, None, 0.0]


def test_evaluate_int_with_float_is_float64_ints_widen_to_int64() -> None:
    assert compile_expr("a + x", S).type == pa.float64()
    e = compile_expr("i8 + i8", S)
    assert e.type == pa.int64()
    assert e.evaluate(BATCH).to_pylist() == [2, -2, None, 254]  # no int8 overflow


def test_evaluate_constant_is_broadcast_and_folded() -> None:
    e = compile_expr("1 + 2 * 3", S)
    assert e.columns == frozenset() and e.constant == pa.scalar(7)
    assert e.evaluate(BATCH).to_pylist() == [7, 7, 7, 7]
    assert compile_expr("a + b * x", S).columns == {"a", "b", "x"}


def test_evaluate_literals_of_every_kind() -> None:
    assert ev("'it''s'") == ["it's"] * 4
    assert ev("true")[0] is True and ev("false")[0] is False
    assert compile_expr("null", S).type == pa.null()
    assert ev("1.5e1") == [15.0] * 4
    assert ev("-9223372036854775808") == [-(2**63)] * 4


def test_split_alias_names_items_like_duckdb() -> None:
    assert split_alias("a") == ("a", "a")
    assert split_alias("x * 2 as y") == ("x * 2", "y")
    assert split_alias('cast(a as string) AS "Out Name"') == ("cast(a as string)", "Out Name")
    assert split_alias(" a + 1 ") == ("a + 1", "a + 1")


# -- compile-time errors ---------------------------------------------------------------------
def test_error_unknown_column_lists_columns_with_position() -> None:
    assert errmsg("price * nme", SCHEMA) == (
        "expression 'price * nme' at 8: unknown column 'nme' (columns: auction, bidder, price)"
    )


def test_error_unknown_function_lists_functions() -> None:
    msg = errmsg("a + frob(a)")
    assert msg.startswith("expression 'a + frob(a)' at 4: unknown function 'frob' (functions: ")
    assert "abs, ceil, coalesce" in msg and "upper, year)" in msg


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abs(a, b)", "at 0: abs() takes 1 argument, got 2"),
        ("round()", "at 0: round() takes 1 to 2 arguments, got 0"),
        ("coalesce()", "at 0: coalesce() takes at least 1 argument, got 0"),
        ("s * 2", "at 2: arithmetic '*' needs numbers, got string * int64"),
        ("a + p", "at 2: arithmetic '+' needs numbers, got int64 + bool"),
        ("s = 1", "at 2: cannot compare string with int64 ('=')"),
        ("p < 1", "at 2: cannot compare bool with int64 ('<')"),
        ("a in ('x')", "at 2: cannot compare int64 with the 'in' list (string)"),
        ("a and p", "at 2: 'and' needs bool operands, got int64 and bool"),
        ("p or s", "at 2: 'or' needs bool operands, got bool and string"),
        ("not a", "at 4: 'not' needs bool operands, got int64"),
        ("-s", "at 1: unary '-' needs a number, got string"),
        ("case when a then 1 end", "at 10: case condition needs bool operands, got int64"),
        ("case when p then 1 else 'x' end", "at 0: case branches have no common type"),
        ("case when a then null end", "at 10: case condition needs bool operands, got int64"),
        ("coalesce(a, s)", "at 0: coalesce() arguments have no common type (int64, string)"),
        ("a::wat", "at 3: unknown type 'wat' (types: bigint, bool"),
        ("p::timestamp", "at 1: cannot cast bool to timestamp"),
        ("s like a", "at 7: 'like' needs a constant string pattern"),
        ("substr(s, a)", "at 10: substr() start must be a constant integer, got int64 expression"),
        ("round(x, 1.5)", "at 9: round() digits must be a constant integer, got double"),
        ("date_trunc('fortnight', ts)", "at 11: date_trunc() unit 'fortnight' is not one of"),
        ("year(a)", "at 5: year() needs a timestamp or date, got int64"),
        ("upper(a)", "at 6: upper() needs a string, got int64"),
        ("regexp_match(s, '(')", "at 16: invalid regular expression '('"),
        ("1 // 0", "at 2: cannot evaluate: divide by zero"),
        ("'abc'::int64", "at 5: cannot evaluate"),
        ("a +", "at 3: expected an expression, got end of expression"),
        ("(a + 1", "at 6: expected ')', got end of expression"),
        ("a b", "at 2: unexpected 'b' after a complete expression"),
        ("a = 'x", "at 4: unterminated string (no closing ')"),
        ("a ? 1", "at 2: unexpected character '?'"),
        ("case end", "at 5: expected 'when', got 'end'"),
        ("99999999999999999999", "at 0: integer literal 99999999999999999999 is out of int64"),
        ("a between 1 or 2", "at 12: expected 'and', got 'or'"),
    ],
)
def test_error_message_quotes_expression_and_position(text: str, message: str) -> None:
    msg = errmsg(text)
    assert msg.startswith(f"expression {text!r} ")
    assert message in msg


def test_error_not_a_string_is_expression_error() -> None:
    with pytest.raises(ExpressionError, match="must be a string, got 42"):
        compile_expr(42, S)  # type: ignore[arg-type]


def test_error_at_runtime_names_failing_part() -> None:
    batch = pa.record_batch([pa.array([2**62, 1])], names=["a"])
    e = compile_expr("a + 1 > 0 and a * 4 > 0", batch.schema)
    with pytest.raises(
        ExpressionError,
        match=r"at 16: cannot evaluate on a batch of 2 rows: .*"
        r"overflow",
    ):
        e.evaluate(batch)
    zero = pa.record_batch([pa.array([1]), pa.array([0])], names=["a", "b"])
    with pytest.raises(ExpressionError, match="at 2: .*divide by zero"):
        compile_expr("a % b", zero.schema).evaluate(zero)


# -- null semantics --------------------------------------------------------------------------
def test_null_and_or_not_are_kleene() -> None:
    assert ev("p and q") == [None, False, None, False]
    assert ev("p or q") == [True, None, None, True]
    assert ev("not q") == [None, None, None, True]
    assert ev("null and false") == [False] * 4
    assert ev("null or true") == [True] * 4


def test_null_propagates_through_arithmetic_and_comparison() -> None:
    assert ev("a + null") == [None] * 4
    assert compile_expr("a + null", S).type == pa.int64()
    assert ev("a > b") == [True, False, None, None]
    assert ev("null = null") == [None] * 4
    assert ev("null in (1, 2)") == [None] * 4
    assert ev("case when p then null end") == [None] * 4
    assert ev("coalesce(null, null)") == [None] * 4


def test_null_is_null_and_is_not_null() -> None:
    assert ev("a is null") == [False, False, True, False]
    assert ev("s is not null") == [True, True, False, True]
    nan = pa.record_batch([pa.array([float("nan"), None])], names=["f"])
    assert ev("f is null", nan) == [False, True]  # NaN is a value


def test_null_in_list_follows_sql() -> None:
    assert ev("a in (7, 0)") == [True, False, None, True]
    assert ev("a in (7, null)") == [True, None, None, None]
    assert ev("a not in (7, 0)") == [False, True, None, False]
    assert ev("a not in (7, null)") == [False, None, None, None]
    assert ev("a in (b, 0)") == [False, False, None, True]  # non-constant items
    assert ev("s in ('ab', 'x')") == [True, False, None, False]
    signed = pa.record_batch([pa.array([-0.0, 0.0, 1.0])], names=["f"])
    assert ev("f in (0, 2)", signed) == [True, True, False]  # -0.0 = 0, as with '='
    assert ev("f in (-0.0)", signed) == [True, True, False]


def test_null_between_and_like() -> None:
    assert ev("a between 0 and 7") == [True, False, None, True]
    assert ev("a not between 0 and 7") == [False, True, None, False]
    assert ev("x between a and b") == [False, True, None, None]
    assert ev("s like 'a%'") == [True, False, None, False]
    assert ev("s not like '_d'") == [True, False, None, True]
    assert ev("s ilike 'c%'") == [False, True, None, False]


def test_null_case_condition_counts_as_false() -> None:
    assert ev("case when p then 'yes' else 'no' end") == ["yes", "no", "no", "yes"]
    assert ev("case when p then 1 end") == [1, None, None, 1]
    assert ev("case a when 7 then 'seven' when 0 then 'zero' end") == [
        "seven",
        None,
        None,
        "zero",
    ]
    assert ev("if(q, 1, 2)") == [2, 2, 2, 2]


def test_null_case_constant_conditions_fold() -> None:
    assert ev("case when false then a when true then b else 0 end") == [2, 2, 3, None]
    assert compile_expr("case when null then a end", S).evaluate(BATCH).null_count == 4


def test_null_coalesce_takes_first_non_null_of_common_type() -> None:
    e = compile_expr("coalesce(a, x, 0)", S)
    assert e.type == pa.float64()
    assert e.evaluate(BATCH).to_pylist() == [7.0, -7.0, 0.0, 0.0]
    assert ev("coalesce(ls, s)") == ["x", "Cd", "z", "w"]


# -- types and conversions -------------------------------------------------------------------
def test_compare_constant_is_narrowed_to_column_type() -> None:
    assert ev("i8 > 0") == [True, False, None, True]
    assert ev("i8 = 127.0") == [False, False, None, True]
    assert ev("i8 < 0.5") == [False, True, None, False]
    assert ev("ls = 'x'") == [True, None, False, False]


def test_compare_timestamp_with_string_constant_parses_it() -> None:
    assert ev("ts >= '1970-01-01 00:00:01'") == [False, True, None, True]
    assert ev("ts = '1970-01-02'") == [False, False, None, True]
    msg = errmsg("ts > 'yesterday'")
    assert "at 5: cannot convert yesterday to timestamp[ms]" in msg


def test_cast_float_to_int_rounds_half_to_even() -> None:
    batch = pa.record_batch([pa.array([2.5, -2.5, 3.5, 1.4, None])], names=["f"])
    assert ev("cast(f as int64)", batch) == [2, -2, 4, 1, None]
    assert ev("f::int32", batch) == [2, -2, 4, 1, None]
    assert ev("round(f)::int64", batch) == [3, -3, 4, 1, None]
    assert compile_expr("f::int32", batch.schema).type == pa.int32()


def test_cast_between_strings_numbers_bools_and_time() -> None:
    assert ev("a::string") == ["7", "-7", None, "0"]
    assert ev("'42'::int64 + 1") == [43] * 4
    assert ev("'true'::bool and p") == [True, False, None, True]
    assert ev("a::timestamp") == ev("to_timestamp(a)")
    assert ev("ts::int64") == [0, 1_000, None, 86_400_000]
    assert ev("ts::date") == ev("cast(ts as date32)")
    assert ev("'1970-01-02'::date::int64") == [86_400_000] * 4
    assert ev("cast(a as double) / 2") == [3.5, -3.5, None, 0.0]


def test_cast_out_of_range_raises_at_evaluate() -> None:
    batch = pa.record_batch([pa.array([1, 300])], names=["a"])
    with pytest.raises(ExpressionError, match="at 1: cannot evaluate"):
        compile_expr("a::int8", batch.schema).evaluate(batch)


def test_timestamp_plus_minus_integer_milliseconds() -> None:
    assert ev("epoch_ms(ts + 1500)") == [1_500, 2_500, None, 86_401_500]
    assert ev("epoch_ms(ts - a)") == [-7, 1_007, None, 86_400_000]
    assert ev("epoch_ms(250 + ts)") == [250, 1_250, None, 86_400_250]
    assert compile_expr("ts + 1", S).type == pa.timestamp("ms")
    us = pa.record_batch([pa.array([1_500], pa.timestamp("us"))], names=["t"])
    assert ev("epoch_ms(t + 2)", us) == [3]


def test_string_concat_operator_propagates_null() -> None:
    assert ev("s || '!'") == ["ab!", "Cd!", None, "!"]
    assert ev("s || a") == ["ab7", "Cd-7", None, "0"]
    assert compile_expr("s || ls", S).type == pa.large_string()


# -- speed -----------------------------------------------------------------------------------
def test_evaluate_filter_of_64k_rows_takes_about_a_millisecond() -> None:
    rng = np.random.default_rng(1)
    n_rows = 65_536
    batch = pa.record_batch(
        [
            pa.array(rng.integers(0, 1_000_000, n_rows)),
            pa.array(rng.integers(0, 1_000_000, n_rows)),
            pa.array(rng.random(n_rows) * 200),
        ],
        schema=SCHEMA,
    )
    e = compile_expr("price > 100 and auction % 123 = 0", SCHEMA)
    e.evaluate(batch)
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        mask = e.evaluate(batch)
        times.append(time.perf_counter() - t0)
    expected = (batch.column(2).to_numpy() > 100) & (batch.column(0).to_numpy() % 123 == 0)
    assert mask.to_numpy(zero_copy_only=False).tolist() == expected.tolist()
    assert sorted(times)[len(times) // 2] < 0.005  # ~0.5 ms measured; generous for CI
