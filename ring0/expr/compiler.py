"""Syntax tree -> typed ``Term`` tree, checked against a schema at compile time.

``Compiler.compile(node)`` types every node bottom-up: a column is looked up in
the schema, operands are converted to a common type (``coerce.py``) or
rejected with a positioned ``ExpressionError``, and each node becomes a closure
over ``pyarrow.compute`` kernels (``term.py``). Functions live in
``functions.py``. Semantics (null handling, division, casts) are documented in
the package docstring; the comments here only say how they are achieved.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from engine.typenames import CAST_TYPES
from ring0.expr import nodes as n
from ring0.expr.coerce import UNIT_PER_MS, arithmetic_type, common_type, kind
from ring0.expr.functions import FUNCTIONS, arity_text
from ring0.expr.kernels import (
    COMPARE,
    FLOAT_OPS,
    INT_OPS,
    cast_constant,
    cast_op,
    fits,
)
from ring0.expr.term import ARROW_ERRORS, Builder, Term, Value

_BOOL = pa.bool_()
_NULL_BOOL = pa.scalar(None, _BOOL)


class Compiler(Builder):
    def __init__(self, text: str, schema: pa.Schema) -> None:
        super().__init__(text)
        self.schema = schema

    def compile(self, node: n.Node) -> Term:
        method = getattr(self, "_" + type(node).__name__.lower())
        term: Term = method(node)
        return term

    # -- leaves -----------------------------------------------------------------------------
    def _literal(self, node: n.Literal) -> Term:
        v = node.value
        if v is None:
            return self.constant(pa.scalar(None, pa.null()), node.pos)
        if isinstance(v, bool):
            return self.constant(pa.scalar(v, _BOOL), node.pos)
        if isinstance(v, int):
            return self.constant(pa.scalar(v, pa.int64()), node.pos)
        if isinstance(v, float):
            return self.constant(pa.scalar(v, pa.float64()), node.pos)
        return self.constant(pa.scalar(v, pa.string()), node.pos)

    def _column(self, node: n.Column) -> Term:
        indices = self.schema.get_all_field_indices(node.name)
        if not indices:
            names = ", ".join(self.schema.names)
            raise self.fail(node.pos, f"unknown column {node.name!r} (columns: {names})")
        if len(indices) > 1:
            raise self.fail(
                node.pos,
                f"column {node.name!r} is ambiguous: the schema has "
                f"{len(indices)} columns of that name",
            )
        return self.column(node.name, self.schema.field(indices[0]).type, node.pos)

    # -- conversions ------------------------------------------------------------------------
    def convert(self, term: Term, target: pa.DataType) -> Term:
        """Implicit, meaning-preserving conversion (widening, null to any type)."""
        if term.type == target:
            return term
        if term.const is not None:
            try:
                return self.constant(cast_constant(term.const, target), term.pos)
            except ARROW_ERRORS as e:
                raise self.fail(term.pos, f"cannot convert {term.const} to {target}") from e
        return self.apply(term.pos, target, lambda v: pc.cast(v, target), term)

    def unify(self, terms: Sequence[Term], prefer_live: bool = False) -> list[Term] | None:
        """``terms`` converted to their common type, or None when they have none.

        String constants next to timestamps/dates are parsed as such. With
        ``prefer_live`` (comparisons) constants are converted to the one type
        of the non-constant operands when that loses nothing, so
        ``int32_col > 100`` compares int32s without casting the column.
        """
        target = common_type([t.type for t in terms])
        if target is None:
            temporal = [t.type for t in terms if kind(t.type) in ("timestamp", "date")]
            rest = [t for t in terms if kind(t.type) not in ("timestamp", "date", "null")]
            if not temporal or not all(kind(t.type) == "string" and t.is_const for t in rest):
                return None
            target = common_type(temporal)
            if target is None:
                return None
        live = {t.type for t in terms if not t.is_const}
        if prefer_live and len(live) == 1:
            only = live.pop()
            if only != target and all(fits(t.const, only) for t in terms if t.is_const):
                target = only
        return [self.convert(t, target) for t in terms]

    def numeric(self, term: Term, what: str) -> Term:
        """An int or float operand widened to int64/float64 (null counts as int64)."""
        if kind(term.type) not in ("int", "float", "null"):
            raise self.fail(term.pos, f"{what} needs a number, got {term.type}")
        return self.convert(term, arithmetic_type(term.type))

    def boolean(self, term: Term, what: str) -> Term:
        if kind(term.type) not in ("bool", "null"):
            raise self.fail(term.pos, f"{what} needs bool operands, got {term.type}")
        return self.convert(term, _BOOL)

    def string(self, term: Term, what: str) -> Term:
        if kind(term.type) == "null":
            return self.convert(term, pa.string())
        if kind(term.type) != "string":
            raise self.fail(term.pos, f"{what} needs a string, got {term.type}")
        return term

    # -- operators --------------------------------------------------------------------------
    def _unary(self, node: n.Unary) -> Term:
        operand = self.compile(node.operand)
        if node.op == "not":
            return self.apply(node.pos, _BOOL, pc.invert, self.boolean(operand, "'not'"))
        operand = self.numeric(operand, f"unary '{node.op}'")
        if node.op == "+":
            return operand
        neg = pc.negate_checked if operand.type == pa.int64() else pc.negate
        return self.apply(node.pos, operand.type, neg, operand)

    def _binary(self, node: n.Binary) -> Term:
        left, right = self.compile(node.left), self.compile(node.right)
        op = node.op
        if op in ("and", "or"):
            fn = pc.and_kleene if op == "and" else pc.or_kleene
            if kind(left.type) not in ("bool", "null") or kind(right.type) not in ("bool", "null"):
                raise self.fail(
                    node.pos, f"'{op}' needs bool operands, got {left.type} and {right.type}"
                )
            return self.apply(
                node.pos, _BOOL, fn, self.convert(left, _BOOL), self.convert(right, _BOOL)
            )
        if op in COMPARE:
            return self.compare(node.pos, op, left, right)
        if op == "||":
            return self.concat(node.pos, [left, right], "emit_null")
        return self._arithmetic(node.pos, op, left, right)

    def compare(self, pos: int, op: str, left: Term, right: Term) -> Term:
        unified = self.unify([left, right], prefer_live=True)
        if unified is None or kind(unified[0].type) == "other":
            raise self.fail(pos, f"cannot compare {left.type} with {right.type} ('{op}')")
        if kind(unified[0].type) == "null":
            return self.constant(_NULL_BOOL, pos)
        return self.apply(pos, _BOOL, COMPARE[op], *unified)

    def _arithmetic(self, pos: int, op: str, left: Term, right: Term) -> Term:
        kl, kr = kind(left.type), kind(right.type)
        if op in ("+", "-") and kl == "timestamp" and kr in ("int", "null"):
            return self._shift(pos, op, left, right)
        if op == "+" and kr == "timestamp" and kl in ("int", "null"):
            return self._shift(pos, op, right, left)
        if not ({kl, kr} <= {"int", "float", "null"}):
            raise self.fail(
                pos, f"arithmetic '{op}' needs numbers, got {left.type} {op} {right.type}"
            )
        target = pa.float64() if op == "/" else arithmetic_type(left.type, right.type)
        left, right = self.convert(left, target), self.convert(right, target)
        ops = FLOAT_OPS if target == pa.float64() else INT_OPS
        return self.apply(pos, target, ops[op], left, right)

    def _shift(self, pos: int, op: str, stamp: Term, millis: Term) -> Term:
        """timestamp +/- integer milliseconds (a timestamp[s] becomes timestamp[ms])."""
        t = stamp.type
        if t.unit == "s":
            t = pa.timestamp("ms", t.tz)
            stamp = self.convert(stamp, t)
        factor = UNIT_PER_MS[t.unit]
        add = pc.add_checked if op == "+" else pc.subtract_checked

        def shift(ts: Value, ms: Value) -> Value:
            ticks = pc.cast(ts, pa.int64())
            delta = ms if factor == 1 else pc.multiply_checked(ms, factor)
            return pc.cast(add(ticks, delta), t)

        return self.apply(pos, t, shift, stamp, self.convert(millis, pa.int64()))

    def concat(self, pos: int, parts: list[Term], null_handling: str) -> Term:
        strings = []
        for p in parts:
            if kind(p.type) == "other":
                raise self.fail(p.pos, f"cannot convert {p.type} to a string")
            strings.append(p if kind(p.type) == "string" else self.convert(p, pa.string()))
        unified = self.unify(strings)
        assert unified is not None

        separator = pa.scalar("", unified[0].type)

        def join(*values: Value) -> Value:
            # "replace" with "" rather than "skip": pyarrow 26's "skip" drops all-null rows
            # from the output (a shorter array).
            return pc.binary_join_element_wise(
                *values, separator, null_handling=null_handling, null_replacement=""
            )

        return self.apply(pos, unified[0].type, join, *unified)

    # -- predicates -------------------------------------------------------------------------
    def _isnull(self, node: n.IsNull) -> Term:
        fn = pc.is_valid if node.negated else pc.is_null
        return self.apply(node.pos, _BOOL, fn, self.compile(node.operand))

    def _between(self, node: n.Between) -> Term:
        operand = self.compile(node.operand)
        low = self.compare(node.pos, ">=", operand, self.compile(node.low))
        high = self.compare(node.pos, "<=", operand, self.compile(node.high))
        both = self.apply(node.pos, _BOOL, pc.and_kleene, low, high)
        return self.apply(node.pos, _BOOL, pc.invert, both) if node.negated else both

    def _inlist(self, node: n.InList) -> Term:
        operand = self.compile(node.operand)
        items = [self.compile(i) for i in node.items]
        unified = self.unify([operand, *items], prefer_live=True)
        if unified is None:
            types = ", ".join(str(t.type) for t in items)
            raise self.fail(node.pos, f"cannot compare {operand.type} with the 'in' list ({types})")
        operand, items = unified[0], unified[1:]
        if kind(operand.type) == "null":
            return self.constant(_NULL_BOOL, node.pos)
        if all(i.is_const for i in items):
            result = self._in_set(node.pos, operand, [i.const for i in items])
        else:  # x in (a, b) == x = a or x = b, with the same null logic
            result = self.compare(node.pos, "=", operand, items[0])
            for item in items[1:]:
                eq = self.compare(node.pos, "=", operand, item)
                result = self.apply(node.pos, _BOOL, pc.or_kleene, result, eq)
        return self.apply(node.pos, _BOOL, pc.invert, result) if node.negated else result

    def _in_set(self, pos: int, operand: Term, values: list[pa.Scalar | None]) -> Term:
        has_null = any(v is None or not v.is_valid for v in values)
        value_set = pa.array(
            [v.as_py() for v in values if v is not None and v.is_valid], type=operand.type
        )

        signed_zero = kind(operand.type) == "float"  # is_in hashes: -0.0 would miss 0.0
        if signed_zero:
            value_set = pc.add(value_set, 0.0)  # x + 0.0 turns -0.0 into 0.0

        def is_in(x: Value) -> Value:
            found = pc.is_in(
                pc.add(x, 0.0) if signed_zero else x, value_set=value_set, skip_nulls=True
            )
            if has_null:  # not found in a list with a null: unknown
                found = pc.if_else(found, True, _NULL_BOOL)
            if x.null_count:
                found = pc.if_else(pc.is_null(x), _NULL_BOOL, found)
            return found

        return self.apply(pos, _BOOL, is_in, operand)

    def _like(self, node: n.Like) -> Term:
        what = "'ilike'" if node.ignore_case else "'like'"
        operand = self.string(self.compile(node.operand), what)
        pattern = self.compile(node.pattern)
        if not pattern.is_const or kind(pattern.type) not in ("string", "null"):
            raise self.fail(pattern.pos, f"{what} needs a constant string pattern")
        if not pattern.const.is_valid:
            return self.constant(_NULL_BOOL, node.pos)
        text, ci = pattern.const.as_py(), node.ignore_case

        def like(v: Value) -> Value:
            return pc.match_like(v, pattern=text, ignore_case=ci)

        result = self.apply(node.pos, _BOOL, like, operand)
        return self.apply(node.pos, _BOOL, pc.invert, result) if node.negated else result

    # -- conditionals -----------------------------------------------------------------------
    def _case(self, node: n.Case) -> Term:
        whens = [(self.compile(c), self.compile(v)) for c, v in node.whens]
        otherwise = self.compile(node.otherwise) if node.otherwise is not None else None
        return self.case(node.pos, whens, otherwise, "case")

    def case(
        self, pos: int, whens: list[tuple[Term, Term]], otherwise: Term | None, what: str
    ) -> Term:
        checked = [self.boolean(c, f"{what} condition") for c, _ in whens]
        values = [v for _, v in whens] + ([otherwise] if otherwise is not None else [])
        unified = self.unify(values)
        if unified is None:
            types = ", ".join(str(v.type) for v in values)
            raise self.fail(pos, f"{what} branches have no common type ({types})")
        target = unified[0].type
        if kind(target) == "null":  # every branch is null
            return self.constant(pa.scalar(None), pos)
        conds: list[Term] = []
        kept: list[Term] = []
        fallback = unified[-1] if otherwise is not None else None
        for cond, value in zip(checked, unified, strict=False):
            if cond.is_const and not cond.const.as_py():
                continue  # false or null: never taken
            if cond.is_const:  # true: taken whenever reached; later branches are dead
                fallback = value
                break
            conds.append(cond)
            kept.append(value)
        if fallback is None:
            fallback = self.constant(pa.scalar(None, target), pos)
        if not conds:
            return fallback
        k = len(conds)

        def case_when(*args: Value) -> Value:
            return pc.case_when(pc.make_struct(*args[:k]), *args[k:])

        return self.apply(pos, target, case_when, *conds, *kept, fallback)

    def _cast(self, node: n.Cast) -> Term:
        operand = self.compile(node.operand)
        target = CAST_TYPES.get(node.type_name)
        if target is None:
            names = ", ".join(sorted(CAST_TYPES))
            raise self.fail(node.type_pos, f"unknown type {node.type_name!r} (types: {names})")
        src = operand.type
        if src == target:
            return operand
        op = cast_op(src, target)
        try:
            op(pa.array([], type=src))
        except ARROW_ERRORS as e:
            raise self.fail(node.pos, f"cannot cast {src} to {node.type_name}") from e
        return self.apply(node.pos, target, op, operand)

    def _call(self, node: n.Call) -> Term:
        spec = FUNCTIONS.get(node.name)
        if spec is None:
            names = ", ".join(sorted(FUNCTIONS))
            raise self.fail(node.pos, f"unknown function {node.name!r} (functions: {names})")
        low, high, build = spec
        if len(node.args) < low or (high is not None and len(node.args) > high):
            raise self.fail(
                node.pos, f"{node.name}() takes {arity_text(low, high)}, got {len(node.args)}"
            )
        return build(self, node.pos, [self.compile(a) for a in node.args])
