"""Aggregates over a changelog input: every row weighed by its change, and what is refused.

A changelog input (``Plan(..., weight="_change")``: a signed integer column, +1 for a row
inserted, -1 for a row retracted) weighs every row by that column in ``partial``, and only
there: ``__n`` (the group's row count, hidden unless ``count`` shows it) is the sum of the
weights, ``count(x)`` the sum over rows where ``x`` is not null, ``sum(x)`` the sum of
``x * weight`` (expressions alike), ``avg`` the one over the other. Those grouped sums are
plain sums, so ``merge`` is unchanged and the dense path may take them. ``sum`` then keeps a
count of non-null values beside it and ``finalize`` gives null where that count is 0 (SQL's
sum of only nulls; a retracted ``5`` must not leave a ``0``). ``min``, ``max``,
``count_distinct``, ``max_by`` and ``min_by`` cannot forget a value and are refused
(``ConfigError``), as is an aggregate that reads the weight column. A weight other than
+-1 counts as that many rows; a null weight is a ``DataError``. A decimal ``sum`` flips the sign
of a retracted value instead of multiplying (``decimal * int64`` would need more than 38 digits
of precision), so with a decimal sum or avg every weight must be +1 or -1, else ``DataError``.

Here: ``check_weight`` and ``check_not_read`` (the refusals, when the ``Plan`` is built) and
``partial`` (``Plan.partial`` of a changelog input). The count kept beside ``sum`` and the null
of ``finalize`` are the ``Plan``'s (``ring0.operators.aggregates``).

Not guaranteed: under retraction a float sum subtracts, so rounding error stays in it (an
infinity or NaN that was added makes it NaN for good).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConfigError, DataError
from ring0.expr import Expr
from ring0.operators import decimal_sums
from ring0.operators.aggregate_spec import AggregateSpec
from ring0.operators.grouping import group_by

RETRACTABLE = ("count", "sum", "avg")  # the aggregates a changelog input (weight) allows


class Part(Protocol):
    """What ``partial`` reads of a partial column (``Plan.parts``): only ``sum`` and ``nn``
    parts exist over a changelog input (``check_weight``)."""

    @property
    def kind(self) -> str: ...

    @property
    def src(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> pa.DataType: ...


def check_weight(aggregates: Sequence[AggregateSpec], schema: pa.Schema, weight: str) -> None:
    """A changelog input: ``weight`` is a signed integer column, every aggregate retractable."""
    t = schema.field(weight).type
    if not pa.types.is_signed_integer(t):
        raise ConfigError(
            f"column {weight!r} has type {t}; as the change of a changelog input it must be a "
            "signed integer (+1 inserted, -1 retracted): cast it, or rename the column"
        )
    for a in aggregates:
        if a.fn not in RETRACTABLE:
            raise ConfigError(
                f"aggregate {a.text!r} cannot be kept over a changelog input: the input has a "
                f"{weight!r} column, so rows are retracted, and {a.fn} cannot forget a value it "
                f"has seen; use count, sum or avg (they subtract what is retracted), or "
                "aggregate before the rows become a changelog"
            )


def check_not_read(
    aggregates: Sequence[AggregateSpec], computed: Mapping[str, Expr], weight: str
) -> None:
    """No aggregate reads ``weight``, as its column or in its expression (``computed``: the
    compiled expressions, by text)."""
    for a in aggregates:
        for col in (a.column, a.by):
            expr = computed.get(col or "")
            if weight == col or (expr is not None and weight in expr.columns):
                raise ConfigError(
                    f"aggregate {a.text!r} reads {weight!r}, the weight of each row of "
                    f"a changelog input (+1 inserted, -1 retracted), which every "
                    f"aggregate applies already: count is the sum of {weight}"
                )


def partial(
    table: pa.Table,
    group: list[str],
    extra: Sequence[tuple[str, str, str]],
    *,
    parts: Sequence[Part],
    weight: str,
    weight_column: str,
    whose: dict[str, str],
) -> pa.Table:
    """``Plan.partial`` of a changelog input: each row counts ``weight`` times (the internal
    column of ``weight_column``), so every part is a grouped sum. ``whose``: the decimal sum
    parts, by name -> who sums it (for errors)."""
    w = table.column(weight)
    if w.null_count:
        raise DataError(
            f"{weight_column} is null in {w.null_count} of {table.num_rows} rows of a "
            f"batch; a changelog row has {weight_column} +1 (inserted) or -1 (retracted)"
        )
    w = pc.cast(w, pa.int64())
    w_float = pc.cast(w, pa.float64())  # the weight of float sums
    negative = None  # decimal sums: x or -x (x * w could exceed the precision)
    if whose:
        decimal_sums.check_unit_weights(w, weight_column, list(whose.values()))
        negative = pc.less(w, 0)
    cols: dict[str, pa.ChunkedArray | pa.Array] = {g: table.column(g) for g in group}
    cols["__w"] = w
    aggs: dict[tuple[str, str], str] = {("__w", "sum"): "__w_sum"}
    for p in parts:
        x = table.column(p.src)
        if p.kind == "sum" and negative is not None and pa.types.is_decimal(p.type):
            cols[p.name] = pc.if_else(negative, pc.negate(x), x)
        elif p.kind == "sum":
            x = x if x.type == p.type else pc.cast(x, p.type, safe=False)
            cols[p.name] = pc.multiply(x, w_float if pa.types.is_floating(p.type) else w)
        elif x.null_count:  # nn; without nulls it is the row count
            cols[p.name] = pc.if_else(pc.is_valid(x), w, 0)
        else:
            continue
        aggs[(p.name, "sum")] = f"{p.name}_sum"
    for col, fn, _ in extra:
        cols[col] = table.column(col)
        aggs[(col, fn)] = f"{col}_{fn}"
    signed, checks = decimal_sums.guard(pa.table(cols), whose, aggs)
    res, _ = group_by(signed, group, aggs, False)
    decimal_sums.check(res, checks)
    out: dict[str, pa.ChunkedArray | pa.Array] = {g: res.column(g) for g in group}
    out["__n"] = res.column("__w_sum")
    for p in parts:
        name = f"{p.name}_sum"
        out[p.name] = res.column(name) if name in res.column_names else out["__n"]
    for col, fn, name in extra:
        out[name] = res.column(f"{col}_{fn}")
    return pa.table(out)
