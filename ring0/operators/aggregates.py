"""Aggregate functions of keyed aggregations: their partial, merge and final steps.

The aggregates come parsed (``ring0.operators.aggregate_spec``: ``count``, ``sum(x)``,
``min``, ``max``, ``avg``, ``count_distinct``, ``max_by(x, y)``, ``min_by``); ``x`` and
``y`` are columns or expressions (``sum(price * qty) as notional``: ``Plan.computed``,
compiled against the input schema when the plan is built, evaluated per batch when the
rows are read). Semantics (SQL's where SQL has one):

* ``count`` / ``count(*)`` counts rows; ``count(x)`` counts rows where ``x`` is not null.
* ``sum``, ``min``, ``max``, ``avg`` skip nulls; a group whose values are all null gives null.
  ``sum`` of integers is int64 and wraps on overflow (as Arrow's sum does); of floats, float64;
  of decimals (``decimal128(p, s)``: PostgreSQL's ``numeric(p, s)``) exact, as
  ``decimal128(38, s)`` (``decimal256(76, s)`` of a ``decimal256``; DuckDB's and PostgreSQL's
  sum keep the scale too), and a sum that needs more digits is a ``DataError`` naming the
  aggregate, never a wrapped or float value. ``avg`` is float64 for every input type (of
  decimals: the exact sum, then divided as a double). ``min``/``max`` keep the input type.
  ``decimal32``/``decimal64`` columns are read as ``decimal128`` of the same precision and scale
  (Arrow's group-by has no sum, min or max of them), so their min/max too are ``decimal128``.
* ``count_distinct(x)`` counts the distinct non-null values.
* ``max_by(x, y)``: ``x`` of the row with the largest ``y`` (``min_by``: smallest); rows whose
  ``y`` is null are skipped; when several rows tie on ``y`` the smallest non-null ``x`` wins, so
  the result never depends on arrival order. Null when every ``y`` of the group is null.

Two-phase evaluation, all vectorised on ``Table.group_by`` (``Plan``, through
``ring0.operators.grouping``): ``partial`` turns raw rows into one row of *partial* columns per
group, ``merge`` combines partial rows of the same group (any number, any order, any nesting:
count/sum add, min/max keep the extreme, count_distinct keeps the set of values as a list,
max_by keeps the best ``(y, x)`` pair) and ``finalize`` turns partial rows into output columns
(avg = sum / count of non-null values). Partial tables
use internal column names (``__n``, ``__p<i>``) beside the caller's group columns; a caller
names its value columns as ``Plan.inputs`` says.

A changelog input (``Plan(..., weight="_change")``: a signed integer column, +1 for a row
inserted, -1 for a row retracted) weighs every row by that column in ``partial``, as
``ring0.operators.weighted`` describes, with the aggregates it refuses.

Decimal sums are checked for overflow around every grouped sum (``partial``, ``merge``) as
``ring0.operators.decimal_sums`` describes; a money column (``decimal128(12, 2)``) never pays
for the check.

Not guaranteed: the row order of a partial or merged table (only ``gid`` aligns rows to groups);
float sums depend on the order partials are merged in (callers keep that order deterministic);
under retraction, what ``weighted`` leaves out; for decimal overflow, what ``decimal_sums``
leaves out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConfigError
from ring0.expr import Expr, compile_expr
from ring0.operators import decimal_sums, weighted
from ring0.operators.aggregate_spec import WORD, AggregateSpec
from ring0.operators.grouping import best_x, group_by, union_lists


def is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def is_summable(t: pa.DataType) -> bool:
    """Types ``sum`` and ``avg`` take: integers, floats, decimals."""
    return is_numeric(t) or pa.types.is_decimal(t)


def is_orderable(t: pa.DataType) -> bool:
    """Types Arrow's group-by can take min/max of and hash (and that we promise to support)."""
    return (
        is_numeric(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_date(t)
        or pa.types.is_time(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
    )


@dataclass(frozen=True)
class _Part:
    kind: str  # sum | nn | min | max | cd | max_by | min_by
    src: str  # internal input column
    by: str | None  # internal input column (max_by/min_by)
    name: str
    type: pa.DataType  # of the partial column (x's type for *_by)


class Plan:
    """The partial columns of a list of aggregates over ``schema``, validated up front.

    ``weight``: the input column of a changelog input (``ring0.operators.weighted``), or None."""

    def __init__(
        self, aggregates: Sequence[AggregateSpec], schema: pa.Schema, weight: str | None = None
    ) -> None:
        if not aggregates:
            raise ConfigError("an aggregation needs at least one aggregate")
        if weight is not None:
            weighted.check_weight(aggregates, schema, weight)
        self.aggregates = list(aggregates)
        self.weighted = weight is not None
        self.inputs: dict[str, str] = {}  # input column (or expression text) -> internal name
        self.computed: dict[str, Expr] = {}  # expression text -> compiled expression
        self._parts: dict[tuple[str, str, str | None], _Part] = {}
        self._finals: list[tuple[AggregateSpec, list[_Part]]] = []
        fields, extra = [], []
        for a in self.aggregates:
            for col in (a.column, a.by):
                if col is None or schema.get_field_index(col) >= 0 or col in self.computed:
                    continue
                if WORD.match(col):
                    raise ConfigError(
                        f"aggregate {a.name!r}: column {col!r} is not in the input "
                        f"(columns: {schema.names})"
                    )
                try:
                    self.computed[col] = expr = compile_expr(col, schema)
                except ConfigError as exc:
                    raise ConfigError(f"aggregate {a.name!r}: {exc}") from None
                extra.append(pa.field(col, expr.type))
        if weight is not None:
            weighted.check_not_read(self.aggregates, self.computed, weight)
        self._widened = {
            f.name: pa.decimal128(f.type.precision, f.type.scale)
            for f in schema
            if pa.types.is_decimal32(f.type) or pa.types.is_decimal64(f.type)
        }  # (Arrow's group-by has no sum, min or max of these)
        fields_in = [f.with_type(self._widened.get(f.name, f.type)) for f in schema]
        schema = self._schema = pa.schema([*fields_in, *extra])
        self._users: dict[str, list[str]] = {}  # part name -> the aggregates that use it
        for a in self.aggregates:
            t = schema.field(a.column).type if a.column else pa.int64()
            if a.fn in ("sum", "avg") and not is_summable(t):
                raise ConfigError(
                    f"aggregate {a.name!r}: {a.fn} needs an integer, floating-point or decimal "
                    f"column; {a.column!r} is {t}"
                )
            for col in (a.column, a.by) if a.fn not in ("count", "sum", "avg") else ():
                if col and not is_orderable(schema.field(col).type):
                    raise ConfigError(
                        f"aggregate {a.name!r}: column {col!r} of type "
                        f"{schema.field(col).type} cannot be compared"
                    )
            self._finals.append((a, self._parts_of(a, t)))
            for p in self._finals[-1][1]:
                self._users.setdefault(p.name, []).append(a.text)
            fields.append(pa.field(a.name, _output_type(a.fn, t)))
        self.output_fields = fields
        self.weight_column = weight
        self.weight = None if weight is None else self._input(weight)  # internal name

    def column(self, batch: pa.RecordBatch, column: str) -> pa.Array:
        """Input ``column`` of ``batch``, or the value of an aggregate's expression."""
        expr = self.computed.get(column)
        if expr is not None:
            return expr.evaluate(batch)
        wide = self._widened.get(column)
        return batch.column(column) if wide is None else pc.cast(batch.column(column), wide)

    def _input(self, column: str) -> str:
        return self.inputs.setdefault(column, f"__c{len(self.inputs)}")

    def _part(self, kind: str, column: str, t: pa.DataType, by: str | None = None) -> _Part:
        src, by_src = self._input(column), (self._input(by) if by else None)
        key = (kind, src, by_src)
        if key not in self._parts:
            self._parts[key] = _Part(kind, src, by_src, f"__p{len(self._parts)}", t)
        return self._parts[key]

    def _parts_of(self, a: AggregateSpec, t: pa.DataType) -> list[_Part]:
        if a.fn == "count":
            return [self._part("nn", a.column, pa.int64())] if a.column else []
        assert a.column is not None
        if a.fn == "avg":
            total = self._part("sum", a.column, _sum_type(t))
            return [total, self._part("nn", a.column, pa.int64())]
        if a.fn == "sum":
            total = self._part("sum", a.column, _sum_type(t))
            return [total, self._part("nn", a.column, pa.int64())] if self.weighted else [total]
        if a.fn == "count_distinct":
            return [self._part("cd", a.column, pa.list_(t))]
        return [self._part(a.fn, a.column, t, a.by)]

    @property
    def parts(self) -> list[_Part]:
        return list(self._parts.values())

    def partial_fields(self) -> list[pa.Field]:
        """Fields of the partial columns, in the order ``partial`` and ``merge`` give them."""
        types = {internal: self._schema.field(col).type for col, internal in self.inputs.items()}
        out = [pa.field("__n", pa.int64())]
        for p in self.parts:
            if p.kind in ("max_by", "min_by"):
                assert p.by is not None
                out.append(pa.field(p.name + "y", types[p.by]))
                out.append(pa.field(p.name + "x", p.type))
            else:
                out.append(pa.field(p.name, p.type))
        return out

    # -- phase 1: raw rows -> one partial row per group -------------------------------------

    def partial(
        self, table: pa.Table, group: list[str], extra: Sequence[tuple[str, str, str]] = ()
    ) -> pa.Table:
        """One partial row per group of ``table`` (raw rows; value columns named as
        ``inputs`` says). ``extra``: ``(column, "min"|"max", out_name)`` kept beside."""
        if self.weight is not None:
            return weighted.partial(
                table,
                group,
                extra,
                parts=self.parts,
                weight=self.weight,
                weight_column=self.weight_column or "",
                whose=self._whose([(p, p.name) for p in self.parts]),
            )
        aggs: dict[tuple[str, str], str] = {("", "count_all"): "count_all"}
        need_gid = False
        for p in self.parts:
            if p.kind in ("sum", "min", "max"):
                aggs[(p.src, p.kind)] = f"{p.src}_{p.kind}"
            elif p.kind == "nn" and table.column(p.src).null_count:
                aggs[(p.src, "count")] = f"{p.src}_count"
            elif p.kind == "cd":
                aggs[(p.src, "distinct")] = f"{p.src}_distinct"
            elif p.kind in ("max_by", "min_by"):
                assert p.by is not None
                aggs[(p.by, p.kind[:3])] = f"{p.by}_{p.kind[:3]}"
                need_gid = True
        for col, fn, _ in extra:
            aggs[(col, fn)] = f"{col}_{fn}"
        table, checks = self._guard_sums(table, aggs, [(p, p.src) for p in self.parts])
        res, gid = group_by(table, group, aggs, need_gid)
        decimal_sums.check(res, checks)
        cols: dict[str, pa.ChunkedArray | pa.Array] = {g: res.column(g) for g in group}
        cols["__n"] = res.column("count_all")
        for p in self.parts:
            if p.kind == "sum":
                total = res.column(f"{p.src}_sum")
                cols[p.name] = total if total.type == p.type else pc.cast(total, p.type, safe=False)
            elif p.kind == "nn":
                name = f"{p.src}_count"
                cols[p.name] = res.column(name) if name in res.column_names else cols["__n"]
            elif p.kind in ("min", "max"):
                cols[p.name] = res.column(f"{p.src}_{p.kind}")
            elif p.kind == "cd":
                cols[p.name] = res.column(f"{p.src}_distinct")
            else:
                assert p.by is not None and gid is not None
                best_y = res.column(f"{p.by}_{p.kind[:3]}")
                cols[p.name + "y"] = best_y
                cols[p.name + "x"] = best_x(table.column(p.by), table.column(p.src), gid, best_y)
        for col, fn, out in extra:
            cols[out] = res.column(f"{col}_{fn}")
        return pa.table(cols)

    # -- phase 2: partial rows of the same group -> one ------------------------------------

    def merge(
        self,
        table: pa.Table,
        group: list[str],
        extra: Sequence[tuple[str, str]] = (),
        want_gid: bool = False,
    ) -> tuple[pa.Table, np.ndarray | None]:
        """Combine the partial rows of each group. ``extra``: ``(column, "min"|"max")`` kept
        under the same name. Returns the merged table and, when asked for (or needed), ``gid``:
        for every input row, the index of its group's row in the result."""
        aggs: dict[tuple[str, str], str] = {("__n", "sum"): "__n_sum"}
        need_gid = want_gid
        for p in self.parts:
            if p.kind in ("sum", "nn"):
                aggs[(p.name, "sum")] = f"{p.name}_sum"
            elif p.kind in ("min", "max"):
                aggs[(p.name, p.kind)] = f"{p.name}_{p.kind}"
            elif p.kind == "cd":
                need_gid = True
            else:
                aggs[(p.name + "y", p.kind[:3])] = f"{p.name}y_{p.kind[:3]}"
                need_gid = True
        for col, fn in extra:
            aggs[(col, fn)] = f"{col}_{fn}"
        sums = [(p, p.name) for p in self.parts if p.kind == "sum"]
        grouped, checks = self._guard_sums(table, aggs, sums)
        res, gid = group_by(grouped, group, aggs, need_gid)
        decimal_sums.check(res, checks)
        cols: dict[str, pa.ChunkedArray | pa.Array] = {g: res.column(g) for g in group}
        cols["__n"] = res.column("__n_sum")
        for p in self.parts:
            if p.kind in ("sum", "nn"):
                cols[p.name] = res.column(f"{p.name}_sum")
            elif p.kind in ("min", "max"):
                cols[p.name] = res.column(f"{p.name}_{p.kind}")
            elif p.kind == "cd":
                assert gid is not None
                cols[p.name] = union_lists(table.column(p.name), gid, res.num_rows)
            else:
                assert gid is not None
                best_y = res.column(f"{p.name}y_{p.kind[:3]}")
                cols[p.name + "y"] = best_y
                x = best_x(table.column(p.name + "y"), table.column(p.name + "x"), gid, best_y)
                cols[p.name + "x"] = x
        for col, fn in extra:
            cols[col] = res.column(f"{col}_{fn}")
        return pa.table(cols), gid

    def _guard_sums(
        self, table: pa.Table, aggs: dict[tuple[str, str], str], sums: list[tuple[_Part, str]]
    ) -> tuple[pa.Table, list[tuple[str, str, str]]]:
        """``decimal_sums.guard`` of the decimal sums ``(part, column of table)``."""
        return decimal_sums.guard(table, self._whose(sums), aggs)

    def _whose(self, sums: list[tuple[_Part, str]]) -> dict[str, str]:
        """Column of table -> who sums it (``_sum_of``), of the decimal sums among ``sums``."""
        return {c: self._sum_of(p) for p, c in sums if p.kind == "sum" and _is_decimal(p)}

    def _sum_of(self, p: _Part) -> str:
        """``aggregate 'sum(x)', 'avg(x)': the sum of 'x'``: who reads part ``p``, in errors."""
        column = next(c for c, internal in self.inputs.items() if internal == p.src)
        users = ", ".join(repr(u) for u in self._users[p.name])
        return f"aggregate {users}: the sum of {column!r}"

    # -- final values -------------------------------------------------------------------------

    def finalize(self, table: pa.Table) -> dict[str, pa.Array | pa.ChunkedArray]:
        """The output column of every aggregate, by name, row-aligned with ``table``."""
        out: dict[str, pa.Array | pa.ChunkedArray] = {}
        for a, parts in self._finals:
            if a.fn == "count":
                out[a.name] = table.column(parts[0].name if parts else "__n")
            elif a.fn in ("sum", "avg"):
                total = table.column(parts[0].name)
                if self.weighted:  # null where no non-null value is left (all retracted)
                    empty = pc.equal(table.column(parts[1].name), 0)
                    total = pc.if_else(empty, pa.scalar(None, total.type), total)
                if a.fn == "avg":
                    n = pc.cast(table.column(parts[1].name), pa.float64())
                    total = pc.cast(total, pa.float64(), safe=False)  # (rounds past 2**53)
                    total = pc.divide(total, n)
                out[a.name] = total
            elif a.fn == "count_distinct":
                n = pc.list_value_length(table.column(parts[0].name))
                out[a.name] = pc.fill_null(pc.cast(n, pa.int64()), 0)
            elif a.fn in ("max_by", "min_by"):
                out[a.name] = table.column(parts[0].name + "x")
            else:
                out[a.name] = table.column(parts[0].name)
        return out


def _is_decimal(p: _Part) -> bool:
    return pa.types.is_decimal(p.type)


def _sum_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_decimal(t):
        return decimal_sums.sum_type(t)
    return pa.float64() if pa.types.is_floating(t) else pa.int64()


def _output_type(fn: str, t: pa.DataType) -> pa.DataType:
    if fn in ("count", "count_distinct"):
        return pa.int64()
    if fn == "avg":
        return pa.float64()
    if fn == "sum":
        return _sum_type(t)
    return t
