"""Filter and projection expressions: SQL-like text, typed at compile time, run on Arrow.

``compile_expr(text, schema)`` parses and types ``text`` against ``schema`` once
and raises ``ExpressionError`` for any mistake, with the text and the 0-based
character position: ``expression 'price * nme' at 8: unknown column 'nme'
(columns: auction, bidder, price)``. The resulting ``Expr`` has ``type`` (the
Arrow result type), ``columns`` (the columns it reads) and
``evaluate(batch) -> pa.Array`` of ``batch.num_rows`` values (a constant is
broadcast), plus ``constant`` (the folded value of an expression that reads no
column) and ``column_ref`` (the name, for a bare column reference).
``split_alias("x * 2 as y")`` splits a select item into text and output name.
Evaluation is a tree of closures over ``pyarrow.compute`` kernels; constant
subexpressions are folded at compile time. A kernel failing at run time
(overflow, division by zero, a bad cast) raises ``ExpressionError`` from
``evaluate``, positioned at the failing part.

Not guaranteed: that ``evaluate`` copies (a bare column reference returns the
batch's own array); the batch must have the compile-time schema's columns.

Modules: ``parser`` (text -> ``nodes``), ``compiler`` (nodes -> typed ``term``
closures, type rules in ``coerce``), ``functions`` (the function table),
``kernels`` (the pyarrow kernels behind operators and casts).

Grammar (lowest precedence first; keywords and function names are
case-insensitive, column names are case-sensitive)::

    expr      := or
    or        := and ('or' and)*
    and       := not ('and' not)*
    not       := 'not' not | predicate
    predicate := concat ( CMP concat
                        | 'is' ['not'] 'null'
                        | ['not'] 'in' '(' expr (',' expr)* ')'
                        | ['not'] 'between' concat 'and' concat
                        | ['not'] ('like' | 'ilike') concat )*
    CMP       := '=' | '==' | '!=' | '<>' | '<' | '<=' | '>' | '>='
    concat    := additive ('||' additive)*
    additive  := term (('+' | '-') term)*
    term      := unary (('*' | '/' | '//' | '%') unary)*
    unary     := ('-' | '+') unary | postfix
    postfix   := primary ('::' TYPE)*
    primary   := INT | FLOAT | STRING | 'true' | 'false' | 'null'
               | IDENT | QUOTED_IDENT | IDENT '(' [expr (',' expr)*] ')'
               | 'cast' '(' expr 'as' TYPE ')'
               | 'case' [expr] ('when' expr 'then' expr)+ ['else' expr] 'end'
               | '(' expr ')'

    INT 42   FLOAT 1.5 .5 1e3 2.5E-3   STRING 'it''s'   IDENT price _x1
    QUOTED_IDENT "Order Id" ("" inside is one ")
    TYPE int8 int16 int32 int64 uint8..uint64 float32 float64 double bool string
         timestamp (= timestamp[ms]) date32, and the SQL names tinyint smallint int
         integer bigint real float boolean varchar text date

So ``not a = b and c or d`` is ``((not (a = b)) and c) or d``, ``-x::int64`` is
``-(x::int64)``, and ``x between 1 and 2 and y`` is ``(x between 1 and 2) and y``.
A projection item (``Project.from_list``) may end in ``as NAME``.

Semantics (DuckDB's unless said otherwise):

* Types: integers of any width compute as int64, floats as float64; int with
  float gives float64. Comparisons and ``in``/``between``/``case``/``coalesce``/
  ``greatest``/``least`` convert to a common type (``coerce.py``); a string
  constant next to a timestamp is parsed as one (``ts >= '2024-01-01'``; UTC for
  a zoned timestamp).
  Strings and numbers, bools and numbers never mix: a compile-time error.
* Arithmetic: ``+ - *`` on ints raise on int64 overflow (``ExpressionError`` from
  ``evaluate``); on floats follow IEEE. ``/`` is always float64 division (x / 0 is
  ±inf or NaN, as in DuckDB). ``//`` and ``%`` truncate toward zero like DuckDB
  (``-7 // 2 = -3``, ``-7 % 2 = -1``, so ``a = (a // b) * b + a % b``); on
  integers, a zero divisor raises. Unlike DuckDB, float ``//`` is truncated
  (``7.5 // 2 = 3.0``; DuckDB gives 3.75) and a float zero divisor gives
  ±inf/NaN rather than an error.
  ``timestamp +/- int`` shifts by milliseconds.
* Nulls: every operator and function returns null for a null input except
  ``and``/``or`` (Kleene: ``null and false`` is false, ``null or true`` is true),
  ``is [not] null``, ``coalesce``, ``concat`` (skips nulls; ``||`` does not),
  ``greatest``/``least`` (ignore nulls) and ``case``/``if`` (a null condition
  counts as false). ``x in (1, null)`` is null when x is not 1. A filter drops
  rows whose condition is null. NaN is a value, not null; it compares unequal
  to everything (IEEE; DuckDB sorts NaN above all numbers instead).
* Casts: float to integer rounds half to even (as DuckDB casts a double;
  ``round`` rounds half away from zero); integer to timestamp reads epoch
  milliseconds and a timestamp or date to integer gives them; timestamp to a
  coarser unit floors; out-of-range values raise.
* Functions: abs round(x[, digits]) floor ceil sqrt ln log10 pow/power greatest
  least | lower upper length trim/ltrim/rtrim(s[, chars]) substr/substring(s,
  start[, len]) (1-based) starts_with ends_with contains concat
  regexp_match/regexp_matches (partial match, bool) | to_timestamp(epoch_ms) ->
  timestamp[ms], epoch_ms(ts) year month day hour minute second (int64),
  date_trunc('year|quarter|month|week|day|hour|minute|second|millisecond', ts)
  | if(c, a, b) coalesce(a, ...). round halves away from zero; floor/ceil/round
  keep integers integers; sqrt/ln/log10 of a bad input are NaN or -inf; trim
  removes spaces. Patterns, digits, substr bounds, trim characters and the
  date_trunc unit must be constants.

Not supported: aggregates, subqueries, decimals and dictionaries (they can be
projected as columns, not computed on), timestamp - timestamp.
"""

from __future__ import annotations

import pyarrow as pa

from engine.errors import ExpressionError
from ring0.expr import nodes
from ring0.expr.compiler import Compiler
from ring0.expr.parser import parse, parse_aliased
from ring0.expr.term import ARROW_ERRORS, Term, locate_failure

__all__ = ["Expr", "compile_expr", "split_alias"]


class Expr:
    """A compiled expression: ``type``, ``columns``, ``evaluate(batch)``; immutable."""

    __slots__ = ("text", "schema", "type", "columns", "_term", "_fn")

    def __init__(self, text: str, schema: pa.Schema, term: Term) -> None:
        self.text = text
        self.schema = schema
        self.type: pa.DataType = term.type
        self.columns: frozenset[str] = term.columns
        self._term = term
        self._fn = term.fn

    @property
    def column_ref(self) -> str | None:
        """The column's name when the expression is just a column reference, else None."""
        term = self._term
        if term.children or term.is_const or len(term.columns) != 1:
            return None
        return next(iter(term.columns))

    @property
    def constant(self) -> pa.Scalar | None:
        """The folded value when the expression reads no column, else None."""
        return self._term.const

    def evaluate(self, batch: pa.RecordBatch) -> pa.Array:
        """The value for each row of ``batch`` (which has the compile-time schema's columns).

        Raises ``ExpressionError`` (with the position of the failing part) when a
        kernel fails at run time: integer overflow, division by zero, a bad cast.
        """
        try:
            value = self._fn(batch)
        except ARROW_ERRORS as e:
            raise self._runtime_error(batch, e) from e
        if isinstance(value, pa.Scalar):
            return pa.repeat(value, batch.num_rows)
        return value

    def _runtime_error(self, batch: pa.RecordBatch, error: Exception) -> ExpressionError:
        term = locate_failure(self._term, batch)
        reason = f"no column {error}" if isinstance(error, KeyError) else str(error)
        return ExpressionError(
            f"expression {self.text!r} at {term.pos}: cannot evaluate on a batch of "
            f"{batch.num_rows} rows: {reason}"
        )

    def __repr__(self) -> str:
        return f"Expr({self.text!r} -> {self.type})"


def compile_expr(text: str, schema: pa.Schema) -> Expr:
    """Parse and type ``text`` against ``schema``; raises ``ExpressionError`` on any mistake."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be a string, got {text!r}")
    return Expr(text, schema, Compiler(text, schema).compile(parse(text)))


def split_alias(item: str) -> tuple[str, str]:
    """A select item ``EXPR [AS NAME]`` -> (EXPR's text, output name); checks the syntax.

    Without ``as`` the name is the column's for a bare column reference and
    EXPR's text otherwise (as DuckDB names it).
    """
    if not isinstance(item, str):
        raise ExpressionError(f"a select item must be a string, got {item!r}")
    node, text, alias = parse_aliased(item)
    if alias is None:
        alias = node.name if isinstance(node, nodes.Column) else text
    return text, alias
