"""Typed, compiled expression nodes: a result type and a closure from a batch to a value.

A ``Term`` evaluates to a ``pa.Array`` of the batch's length, or to a
``pa.Scalar`` when it is a constant (``const`` is set): operators broadcast
scalars themselves, and ``Expr.evaluate`` broadcasts a constant result. Terms
whose inputs are all constant are folded when they are built (``apply``), so
``-5``, ``'2024-01-01'::timestamp`` or ``1 + 2`` cost nothing per batch, and an
error in a constant (a bad cast, ``1 // 0``) is reported at compile time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import pyarrow as pa

from engine.errors import ExpressionError

Value = Any  # pa.Array | pa.Scalar (pyarrow has no precise stub types)
Fn = Callable[[pa.RecordBatch], Value]
Op = Callable[..., Value]

ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, KeyError)


class Term:
    """One compiled node: ``type``, ``fn(batch)``, source ``pos``, ``const`` scalar or None."""

    __slots__ = ("type", "fn", "pos", "const", "children", "columns")

    def __init__(
        self,
        type: pa.DataType,
        fn: Fn,
        pos: int,
        const: pa.Scalar | None = None,
        children: tuple[Term, ...] = (),
        columns: frozenset[str] = frozenset(),
    ) -> None:
        self.type = type
        self.fn = fn
        self.pos = pos
        self.const = const
        self.children = children
        self.columns = columns

    @property
    def is_const(self) -> bool:
        return self.const is not None


class Builder:
    """Makes terms for one expression text; every compile-time error goes through ``fail``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def fail(self, pos: int, message: str) -> ExpressionError:
        return ExpressionError(f"expression {self.text!r} at {pos}: {message}")

    def constant(self, value: pa.Scalar, pos: int) -> Term:
        return Term(value.type, lambda _batch: value, pos, const=value)

    def column(self, name: str, type: pa.DataType, pos: int) -> Term:
        return Term(type, lambda batch: batch.column(name), pos, columns=frozenset([name]))

    def apply(self, pos: int, type: pa.DataType, op: Op, *args: Term) -> Term:
        """The term ``op(*values of args)`` of result ``type``; folded if all args are constant."""
        if all(a.const is not None for a in args):
            try:
                out = op(*[pa.repeat(a.const, 1) for a in args])
                value = out[0] if isinstance(out, pa.Array | pa.ChunkedArray) else out
                if value.type != type:
                    value = value.cast(type)
            except ARROW_ERRORS as e:
                raise self.fail(pos, f"cannot evaluate: {e}") from e
            return self.constant(value, pos)
        columns = frozenset().union(*(a.columns for a in args))
        fns = [a.fn for a in args]
        fn: Fn
        if len(fns) == 1:
            f0 = fns[0]
            fn = lambda batch: op(f0(batch))  # noqa: E731
        elif len(fns) == 2:
            f0, f1 = fns
            fn = lambda batch: op(f0(batch), f1(batch))  # noqa: E731
        else:
            fn = lambda batch: op(*[f(batch) for f in fns])  # noqa: E731
        return Term(type, fn, pos, children=tuple(args), columns=columns)


class Compiling(Protocol):
    """What a function builder (``functions``) asks of the compiler (``compiler.Compiler``).

    Kept here, beside ``Builder``, so that the function table does not import the
    compiler that imports it.
    """

    def fail(self, pos: int, message: str) -> ExpressionError: ...

    def constant(self, value: pa.Scalar, pos: int) -> Term: ...

    def apply(self, pos: int, type: pa.DataType, op: Op, *args: Term) -> Term: ...

    def convert(self, term: Term, target: pa.DataType) -> Term: ...

    def unify(self, terms: Sequence[Term], prefer_live: bool = False) -> list[Term] | None: ...

    def numeric(self, term: Term, what: str) -> Term: ...

    def boolean(self, term: Term, what: str) -> Term: ...

    def string(self, term: Term, what: str) -> Term: ...


def broadcast(values: tuple[Value, ...]) -> list[Value]:
    """Scalars repeated to the length of the first array among ``values`` (for kernels that
    want arrays only); unchanged when all are scalars."""
    length = next((len(v) for v in values if not isinstance(v, pa.Scalar)), None)
    if length is None:
        return list(values)
    return [pa.repeat(v, length) if isinstance(v, pa.Scalar) else v for v in values]


def locate_failure(term: Term, batch: pa.RecordBatch) -> Term:
    """The innermost term that raises on ``batch`` (cold path: re-evaluates subtrees)."""
    for child in term.children:
        try:
            child.fn(batch)
        except ARROW_ERRORS:
            return locate_failure(child, batch)
    return term
