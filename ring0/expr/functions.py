"""The function table: name -> (fewest args, most args or None, builder).

A builder gets the compiler, the call's position and the compiled arguments,
checks their types (raising through ``c.fail``) and returns the result term.
Arguments documented as constant (round's digits, substr's start and length,
patterns, date_trunc's unit, trim's characters) must fold to a constant at
compile time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ring0.expr.coerce import kind
from ring0.expr.kernels import epoch_ms, round_float
from ring0.expr.term import Compiling, Term, Value

Compiler = Compiling  # the builders' view of ring0.expr.compiler.Compiler
Build = Callable[[Compiler, int, list[Term]], Term]
_F64, _I64, _BOOL = pa.float64(), pa.int64(), pa.bool_()
_TRUNC_UNITS = (
    "year",
    "quarter",
    "month",
    "week",
    "day",
    "hour",
    "minute",
    "second",
    "millisecond",
    "microsecond",
)


def arity_text(low: int, high: int | None) -> str:
    if high is None:
        return f"at least {low} argument{'s' if low != 1 else ''}"
    if low == high:
        return f"{low} argument{'s' if low != 1 else ''}"
    return f"{low} to {high} arguments"


def constant(c: Compiler, term: Term, want: type, what: str) -> Any:
    """The Python value of a constant argument of type ``want`` (int or str)."""
    label = "integer" if want is int else "string"
    ok = {"int": int, "string": str}.get(kind(term.type)) is want
    if not term.is_const or not ok or not term.const.is_valid:
        raise c.fail(
            term.pos,
            f"{what} must be a constant {label}, got {term.type}"
            + ("" if term.is_const else " expression"),
        )
    return term.const.as_py()


# -- numbers ---------------------------------------------------------------------------------
def _numeric_fn(
    int_op: Callable[[Value], Value] | None, float_op: Callable[[Value], Value], name: str
) -> Build:
    """A one-argument numeric function: ints stay int64 when ``int_op`` is given (None:
    identity), floats give float64."""

    def build(c: Compiler, pos: int, args: list[Term]) -> Term:
        x = c.numeric(args[0], f"{name}()")
        if x.type == _I64:
            return x if int_op is None else c.apply(pos, _I64, int_op, x)
        return c.apply(pos, _F64, float_op, x)

    return build


def _float_fn(op: Callable[..., Value], name: str) -> Build:
    def build(c: Compiler, pos: int, args: list[Term]) -> Term:
        xs = [c.convert(c.numeric(a, f"{name}()"), _F64) for a in args]
        return c.apply(pos, _F64, op, *xs)

    return build


def _round(c: Compiler, pos: int, args: list[Term]) -> Term:
    x = c.numeric(args[0], "round()")
    digits = constant(c, args[1], int, "round() digits") if len(args) > 1 else 0
    if x.type == _I64 and digits >= 0:
        return x

    def rnd(v: Value) -> Value:
        if pa.types.is_floating(x.type):  # on the exact value of the double, as DuckDB
            return round_float(v, digits)
        return pc.round(v, ndigits=digits, round_mode="half_towards_infinity")

    return c.apply(pos, x.type, rnd, x)


def _extreme(fn: Callable[..., Value], name: str) -> Build:
    def build(c: Compiler, pos: int, args: list[Term]) -> Term:
        unified = c.unify(args)
        if unified is not None and kind(unified[0].type) == "null":
            return c.constant(pa.scalar(None), pos)
        if unified is None or kind(unified[0].type) == "other":
            types = ", ".join(str(a.type) for a in args)
            raise c.fail(pos, f"{name}() arguments have no common type ({types})")

        def extreme(*values: Value) -> Value:
            return fn(*values, skip_nulls=True)

        return c.apply(pos, unified[0].type, extreme, *unified)

    return build


# -- strings ---------------------------------------------------------------------------------
def _string_fn(op: Callable[[Value], Value], name: str, result: pa.DataType | None = None) -> Build:
    def build(c: Compiler, pos: int, args: list[Term]) -> Term:
        s = c.string(args[0], f"{name}()")
        return c.apply(pos, result or s.type, op, s)

    return build


def _trim(which: str) -> Build:
    kernel = {"both": pc.utf8_trim, "left": pc.utf8_ltrim, "right": pc.utf8_rtrim}[which]

    def build(c: Compiler, pos: int, args: list[Term]) -> Term:
        s = c.string(args[0], "trim()")
        chars = constant(c, args[1], str, "trim() characters") if len(args) > 1 else " "
        return c.apply(pos, s.type, lambda v: kernel(v, characters=chars), s)

    return build


def _substr(c: Compiler, pos: int, args: list[Term]) -> Term:
    s = c.string(args[0], "substr()")
    start = constant(c, args[1], int, "substr() start")
    length = constant(c, args[2], int, "substr() length") if len(args) > 2 else None
    if length is not None and length < 0:
        raise c.fail(args[2].pos, f"substr() length must be >= 0, got {length}")
    # 1-based like SQL; 0 is the position before the first character; negative counts
    # from the end (DuckDB's rules).
    stop: int | None
    if start > 0:
        begin, stop = start - 1, None if length is None else start - 1 + length
    elif start == 0:
        begin, stop = 0, None if length is None else max(length - 1, 0)
    else:
        begin = start
        stop = None if length is None or start + length >= 0 else start + length
    return c.apply(pos, s.type, lambda v: pc.utf8_slice_codeunits(v, begin, stop), s)


def _pattern_fn(kernel: Callable[..., Value], name: str, regex: bool = False) -> Build:
    def build(c: Compiler, pos: int, args: list[Term]) -> Term:
        s = c.string(args[0], f"{name}()")
        pattern = constant(c, args[1], str, f"{name}() pattern")
        if regex:
            try:
                kernel(pa.array([""]), pattern=pattern)
            except (pa.ArrowInvalid, re.error) as e:
                raise c.fail(args[1].pos, f"invalid regular expression {pattern!r}: {e}") from e
        return c.apply(pos, _BOOL, lambda v: kernel(v, pattern=pattern), s)

    return build


def _concat(c: Compiler, pos: int, args: list[Term]) -> Term:
    return c.concat(pos, args, "replace")


# -- time ------------------------------------------------------------------------------------
def _temporal(c: Compiler, term: Term, name: str, dates: bool = True) -> Term:
    k = kind(term.type)
    if k == "null":
        return c.convert(term, pa.timestamp("ms"))
    if k != "timestamp" and not (dates and k == "date"):
        want = "a timestamp or date" if dates else "a timestamp"
        raise c.fail(term.pos, f"{name}() needs {want}, got {term.type}")
    return term


def _to_timestamp(c: Compiler, pos: int, args: list[Term]) -> Term:
    ms = c.numeric(args[0], "to_timestamp()")
    if ms.type != _I64:
        raise c.fail(args[0].pos, f"to_timestamp() needs integer milliseconds, got {ms.type}")
    t = pa.timestamp("ms")
    return c.apply(pos, t, lambda v: pc.cast(v, t), ms)


def _epoch_ms(c: Compiler, pos: int, args: list[Term]) -> Term:
    return c.apply(pos, _I64, epoch_ms, _temporal(c, args[0], "epoch_ms"))


def _field(kernel: Callable[[Value], Value], name: str, dates: bool) -> Build:
    def build(c: Compiler, pos: int, args: list[Term]) -> Term:
        ts = _temporal(c, args[0], name, dates)
        return c.apply(pos, _I64, lambda v: pc.cast(kernel(v), _I64), ts)

    return build


def _date_trunc(c: Compiler, pos: int, args: list[Term]) -> Term:
    unit = constant(c, args[0], str, "date_trunc() unit").lower()
    if unit not in _TRUNC_UNITS:
        raise c.fail(
            args[0].pos, f"date_trunc() unit {unit!r} is not one of {', '.join(_TRUNC_UNITS)}"
        )
    ts = _temporal(c, args[1], "date_trunc")
    if kind(ts.type) == "date" and unit not in ("year", "quarter", "month", "week", "day"):
        return ts
    return c.apply(pos, ts.type, lambda v: pc.floor_temporal(v, unit=unit), ts)


# -- conditionals ----------------------------------------------------------------------------
def _if(c: Compiler, pos: int, args: list[Term]) -> Term:
    return c.case(pos, [(args[0], args[1])], args[2], "if()")


def _coalesce(c: Compiler, pos: int, args: list[Term]) -> Term:
    unified = c.unify(args)
    if unified is None:
        types = ", ".join(str(a.type) for a in args)
        raise c.fail(pos, f"coalesce() arguments have no common type ({types})")
    return c.apply(pos, unified[0].type, pc.coalesce, *unified)


FUNCTIONS: dict[str, tuple[int, int | None, Build]] = {
    "abs": (1, 1, _numeric_fn(pc.abs_checked, pc.abs, "abs")),
    "round": (1, 2, _round),
    "floor": (1, 1, _numeric_fn(None, pc.floor, "floor")),
    "ceil": (1, 1, _numeric_fn(None, pc.ceil, "ceil")),
    "sqrt": (1, 1, _float_fn(pc.sqrt, "sqrt")),
    "ln": (1, 1, _float_fn(pc.ln, "ln")),
    "log10": (1, 1, _float_fn(pc.log10, "log10")),
    "pow": (2, 2, _float_fn(pc.power, "pow")),
    "power": (2, 2, _float_fn(pc.power, "power")),
    "greatest": (1, None, _extreme(pc.max_element_wise, "greatest")),
    "least": (1, None, _extreme(pc.min_element_wise, "least")),
    "lower": (1, 1, _string_fn(pc.utf8_lower, "lower")),
    "upper": (1, 1, _string_fn(pc.utf8_upper, "upper")),
    "length": (1, 1, _string_fn(lambda v: pc.cast(pc.utf8_length(v), _I64), "length", _I64)),
    "trim": (1, 2, _trim("both")),
    "ltrim": (1, 2, _trim("left")),
    "rtrim": (1, 2, _trim("right")),
    "substr": (2, 3, _substr),
    "substring": (2, 3, _substr),
    "starts_with": (2, 2, _pattern_fn(pc.starts_with, "starts_with")),
    "ends_with": (2, 2, _pattern_fn(pc.ends_with, "ends_with")),
    "contains": (2, 2, _pattern_fn(pc.match_substring, "contains")),
    "regexp_match": (2, 2, _pattern_fn(pc.match_substring_regex, "regexp_match", regex=True)),
    "regexp_matches": (2, 2, _pattern_fn(pc.match_substring_regex, "regexp_matches", regex=True)),
    "concat": (1, None, _concat),
    "to_timestamp": (1, 1, _to_timestamp),
    "epoch_ms": (1, 1, _epoch_ms),
    "year": (1, 1, _field(pc.year, "year", dates=True)),
    "month": (1, 1, _field(pc.month, "month", dates=True)),
    "day": (1, 1, _field(pc.day, "day", dates=True)),
    "hour": (1, 1, _field(pc.hour, "hour", dates=False)),
    "minute": (1, 1, _field(pc.minute, "minute", dates=False)),
    "second": (1, 1, _field(pc.second, "second", dates=False)),
    "date_trunc": (2, 2, _date_trunc),
    "if": (3, 3, _if),
    "coalesce": (1, None, _coalesce),
}
