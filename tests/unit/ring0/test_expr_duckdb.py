"""Property: random arithmetic/comparison/logic expressions evaluate as DuckDB evaluates them.

Hypothesis draws a table of nullable int and float columns and an expression
tree, renders it as SQL text with the fewest parentheses the shared precedence
rules allow (so both parsers must agree on precedence), and compares our
``evaluate`` with DuckDB running the same text over the same Arrow table.

The grammar is restricted to where the semantics are meant to match DuckDB:
``+ - *``, unary minus, ``/`` (float division), integer ``//`` and ``%``
(truncating), comparisons, ``and``/``or``/``not``, ``is [not] null``,
``between`` and ``in``. Divisors are non-zero, magnitudes stay far from int64
overflow and float overflow (so no NaN reaches a comparison, where the two
differ: IEEE here, NaN-is-largest there), and two literals are never combined
by ``+ - *`` (DuckDB would compute those in int32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import duckdb
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ring0.expr import compile_expr

INT_COLUMNS = ("a", "b", "n")  # n is never zero: a safe divisor
FLOAT_COLUMNS = ("x", "y")
SCHEMA = pa.schema(
    [(c, pa.int64()) for c in INT_COLUMNS]
    + [(c, pa.float64()) for c in FLOAT_COLUMNS]
    + [("p", pa.bool_())]
)
ARITHMETIC_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2, "%": 2}
UNARY_PREC = 3
LEAF_PREC = 4
PRED_PREC, NOT_PREC, AND_PREC, OR_PREC = 0, -1, -2, -3


@dataclass(frozen=True)
class E:
    text: str
    prec: int
    is_int: bool = False
    has_column: bool = False


def binary(left: E, op: str, right: E, prec: int, is_int: bool = False) -> E:
    """Render ``left op right`` with parentheses only where precedence needs them."""
    lt = left.text if left.prec >= prec else f"({left.text})"
    rt = right.text if right.prec > prec else f"({right.text})"  # left-associative
    return E(f"{lt} {op} {rt}", prec, is_int, left.has_column or right.has_column)


def negate(operand: E) -> E:
    text = operand.text
    if operand.prec < UNARY_PREC or text.startswith("-"):  # "--" would be a SQL comment
        text = f"({text})"
    return E(f"-{text}", UNARY_PREC, operand.is_int, operand.has_column)


def float_literal(v: float) -> str:
    text = repr(v)
    return text if "e" in text else text + "e0"  # exponent form: DOUBLE in DuckDB, not DECIMAL


int_literal = st.integers(0, 100).map(lambda v: E(str(v), LEAF_PREC, is_int=True))
float_lit = st.floats(0, 1000, allow_nan=False, allow_infinity=False).map(
    lambda v: E(float_literal(v), LEAF_PREC)
)
int_column = st.sampled_from(INT_COLUMNS).map(lambda c: E(c, LEAF_PREC, True, True))
float_column = st.sampled_from(FLOAT_COLUMNS).map(lambda c: E(c, LEAF_PREC, False, True))
int_divisor = st.one_of(
    st.just(E("n", LEAF_PREC, True, True)),
    st.integers(1, 9).map(lambda v: E(str(v), LEAF_PREC, True)),
    st.integers(1, 9).map(lambda v: negate(E(str(v), LEAF_PREC, True))),
)
float_divisor = st.one_of(
    int_divisor, st.floats(0.5, 100).map(lambda v: E(float_literal(v), LEAF_PREC))
)


@st.composite
def numeric(draw: st.DrawFn, depth: int, want_int: bool = False) -> E:
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        leaves = (
            [int_column, int_literal]
            if want_int
            else [
                int_column,
                float_column,
                int_literal,
                float_lit,
            ]
        )
        return draw(st.one_of(leaves))
    ops = ["+", "-", "*", "neg", "//", "%"] + ([] if want_int else ["/"])
    op = draw(st.sampled_from(ops))
    if op == "neg":
        return negate(draw(numeric(depth - 1, want_int)))
    if op in ("//", "%"):
        left = draw(numeric(depth - 1, want_int=True))
        return binary(left, op, draw(int_divisor), 2, is_int=True)
    if op == "/":
        return binary(draw(numeric(depth - 1)), "/", draw(float_divisor), 2)
    left = draw(numeric(depth - 1, want_int))
    right = draw(numeric(depth - 1, want_int))
    if not (left.has_column or right.has_column):
        right = draw(int_column if want_int else st.one_of(int_column, float_column))
    return binary(left, op, right, ARITHMETIC_PREC[op], left.is_int and right.is_int)


@st.composite
def predicate(draw: st.DrawFn, depth: int) -> E:
    kind = draw(st.sampled_from(["cmp", "cmp", "isnull", "between", "in", "p"]))
    if kind == "p":
        return E("p", LEAF_PREC, has_column=True)
    operand = draw(numeric(depth))
    if kind == "cmp":
        op = draw(st.sampled_from(["=", "==", "!=", "<>", "<", "<=", ">", ">="]))
        return binary(operand, op, draw(numeric(depth)), PRED_PREC)
    if kind == "isnull":
        neg = draw(st.booleans())
        return E(f"{operand.text} is {'not ' if neg else ''}null", PRED_PREC)
    if kind == "between":
        low, high = draw(numeric(1)), draw(numeric(1))
        neg = "not " if draw(st.booleans()) else ""
        return E(f"{operand.text} {neg}between {low.text} and {high.text}", PRED_PREC)
    items = draw(
        st.lists(st.one_of(int_literal, float_lit, st.just(E("null", 4))), min_size=1, max_size=4)
    )
    neg = "not " if draw(st.booleans()) else ""
    return E(f"{operand.text} {neg}in ({', '.join(i.text for i in items)})", PRED_PREC)


@st.composite
def condition(draw: st.DrawFn, depth: int) -> E:
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        return draw(predicate(2))
    op = draw(st.sampled_from(["and", "or", "not"]))
    if op == "not":
        inner = draw(condition(depth - 1))
        text = inner.text if inner.prec >= NOT_PREC else f"({inner.text})"
        return E(f"not {text}", NOT_PREC)
    prec = AND_PREC if op == "and" else OR_PREC
    return binary(draw(condition(depth - 1)), op, draw(condition(depth - 1)), prec)


def column_values(kind: str) -> st.SearchStrategy[object]:
    if kind == "n":
        return st.one_of(st.none(), st.integers(-9, -1), st.integers(1, 9))
    if kind == "int":
        return st.one_of(st.none(), st.integers(-100, 100))
    if kind == "float":
        finite = st.floats(-1000, 1000, allow_nan=False, allow_infinity=False)
        return st.one_of(st.none(), finite)
    return st.one_of(st.none(), st.booleans())


row = st.tuples(
    column_values("int"),
    column_values("int"),
    column_values("n"),
    column_values("float"),
    column_values("float"),
    column_values("bool"),
)


_CON = duckdb.connect()  # one connection: opening one costs ~40 ms


def duckdb_eval(text: str, table: pa.Table) -> tuple[list[object], str]:
    _CON.register("t", table)
    try:
        rel = _CON.sql(f"SELECT {text} AS r FROM t")
        return [r[0] for r in rel.fetchall()], str(rel.types[0])
    finally:
        _CON.unregister("t")


def same(ours: list[object], theirs: list[object]) -> bool:
    if len(ours) != len(theirs):
        return False
    for a, b in zip(ours, theirs, strict=True):
        if isinstance(a, float) and isinstance(b, float | int):
            if not math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12):
                return False
        elif a != b or type(a) is not type(b) and not isinstance(b, float | int):
            return False
    return True


DUCK_TYPES = {
    "BIGINT": pa.int64(),
    "INTEGER": pa.int64(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(row, max_size=12),
    expr=st.one_of(numeric(3), condition(2)),
)
def test_expr_random_expression_matches_duckdb(rows: list[tuple[object, ...]], expr: E) -> None:
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in SCHEMA]
    batch = pa.record_batch(
        [pa.array(list(col), type=f.type) for col, f in zip(columns, SCHEMA, strict=True)],
        schema=SCHEMA,
    )
    compiled = compile_expr(expr.text, SCHEMA)
    ours = compiled.evaluate(batch).to_pylist()
    theirs, duck_type = duckdb_eval(expr.text, pa.Table.from_batches([batch]))
    assert same(ours, theirs), f"{expr.text!r}: ours {ours} != duckdb {theirs}"
    if duck_type in DUCK_TYPES and compiled.type != pa.null():
        assert compiled.type == DUCK_TYPES[duck_type], expr.text


def test_expr_render_uses_minimal_parentheses() -> None:
    a, b, c = (E(v, LEAF_PREC, True, True) for v in "abc")
    assert binary(binary(a, "-", b, 1), "-", c, 1).text == "a - b - c"
    assert binary(a, "-", binary(b, "-", c, 1), 1).text == "a - (b - c)"
    assert binary(binary(a, "+", b, 1), "*", c, 2).text == "(a + b) * c"
    assert negate(negate(a)).text == "-(-a)"
