"""Aggregate functions of keyed aggregations: their partial, merge and final steps.

The aggregates come parsed (``ring0.operators.aggregate_spec``: ``count``, ``sum(x)``,
``min``, ``max``, ``avg``, ``count_distinct``, ``max_by(x, y)``, ``min_by``); ``x`` and
``y`` are columns or expressions (``sum(price * qty) as notional``: ``Plan.computed``,
compiled against the input schema when the plan is built, evaluated per batch when the
rows are read). Semantics (SQL's where SQL has one):

* ``count`` / ``count(*)`` counts rows; ``count(x)`` counts rows where ``x`` is not null.
* ``sum``, ``min``, ``max``, ``avg`` skip nulls; a group whose values are all null gives null.
  ``sum`` of integers is int64 and wraps on overflow (as Arrow's sum does); of floats, float64.
* ``count_distinct(x)`` counts the distinct non-null values.
* ``max_by(x, y)``: ``x`` of the row with the largest ``y`` (``min_by``: smallest); rows whose
  ``y`` is null are skipped; when several rows tie on ``y`` the smallest non-null ``x`` wins, so
  the result never depends on arrival order. Null when every ``y`` of the group is null.

Two-phase evaluation, all vectorised on ``Table.group_by`` (``Plan``): ``partial`` turns raw rows
into one row of *partial* columns per group, ``merge`` combines partial rows of the same group
(any number, any order, any nesting: count/sum add, min/max keep the extreme, count_distinct
keeps the set of values as a list, max_by keeps the best ``(y, x)`` pair) and ``finalize``
turns partial rows into output columns (avg = sum / count of non-null values). Partial tables
use internal column names (``__n``, ``__p<i>``) beside the caller's group columns; a caller
names its value columns as ``Plan.inputs`` says.

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
+-1 counts as that many rows; a null weight is a ``DataError``.

Not guaranteed: the row order of a partial or merged table (only ``gid`` aligns rows to groups);
float sums depend on the order partials are merged in (callers keep that order deterministic);
under retraction a float sum subtracts, so rounding error stays in it (an infinity or NaN that
was added makes it NaN for good).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConfigError, DataError
from ring0.expr import Expr, compile_expr
from ring0.operators.aggregate_spec import WORD, AggregateSpec
from ring0.operators.dense import dense_group

_VALID = pc.CountOptions(mode="only_valid")
RETRACTABLE = ("count", "sum", "avg")  # the aggregates a changelog input (weight) allows


def is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


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

    ``weight``: the input column of a changelog input (see the module docstring), or None."""

    def __init__(
        self, aggregates: Sequence[AggregateSpec], schema: pa.Schema, weight: str | None = None
    ) -> None:
        if not aggregates:
            raise ConfigError("an aggregation needs at least one aggregate")
        if weight is not None:
            _check_weight(aggregates, schema, weight)
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
            for a in self.aggregates:
                for col in (a.column, a.by):
                    expr = self.computed.get(col or "")
                    if weight == col or (expr is not None and weight in expr.columns):
                        raise ConfigError(
                            f"aggregate {a.text!r} reads {weight!r}, the weight of each row of "
                            f"a changelog input (+1 inserted, -1 retracted), which every "
                            f"aggregate applies already: count is the sum of {weight}"
                        )
        schema = self._schema = pa.schema([*schema, *extra])
        for a in self.aggregates:
            t = schema.field(a.column).type if a.column else pa.int64()
            if a.fn in ("sum", "avg") and not is_numeric(t):
                raise ConfigError(
                    f"aggregate {a.name!r}: {a.fn} needs an integer or floating-point column; "
                    f"{a.column!r} is {t}"
                )
            for col in (a.column, a.by) if a.fn not in ("count", "sum", "avg") else ():
                if col and not is_orderable(schema.field(col).type):
                    raise ConfigError(
                        f"aggregate {a.name!r}: column {col!r} of type "
                        f"{schema.field(col).type} cannot be compared"
                    )
            self._finals.append((a, self._parts_of(a, t)))
            fields.append(pa.field(a.name, _output_type(a.fn, t)))
        self.output_fields = fields
        self.weight_column = weight
        self.weight = None if weight is None else self._input(weight)  # internal name

    def column(self, batch: pa.RecordBatch, column: str) -> pa.Array:
        """Input ``column`` of ``batch``, or the value of an aggregate's expression."""
        expr = self.computed.get(column)
        return batch.column(column) if expr is None else expr.evaluate(batch)

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
            return self._partial_weighted(table, group, extra)
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
        res, gid = _group(table, group, aggs, need_gid)
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
                cols[p.name + "x"] = _best_x(table.column(p.by), table.column(p.src), gid, best_y)
        for col, fn, out in extra:
            cols[out] = res.column(f"{col}_{fn}")
        return pa.table(cols)

    def _partial_weighted(
        self, table: pa.Table, group: list[str], extra: Sequence[tuple[str, str, str]]
    ) -> pa.Table:
        """``partial`` of a changelog input: each row counts ``weight`` times (only count and
        sum parts exist: ``_check_weight``), so every part is a grouped sum."""
        assert self.weight is not None
        w = table.column(self.weight)
        if w.null_count:
            raise DataError(
                f"{self.weight_column} is null in {w.null_count} of {table.num_rows} rows of a "
                f"batch; a changelog row has {self.weight_column} +1 (inserted) or -1 (retracted)"
            )
        w = pc.cast(w, pa.int64())
        w_float = pc.cast(w, pa.float64())  # the weight of float sums
        cols: dict[str, pa.ChunkedArray | pa.Array] = {g: table.column(g) for g in group}
        cols["__w"] = w
        aggs: dict[tuple[str, str], str] = {("__w", "sum"): "__w_sum"}
        for p in self.parts:
            x = table.column(p.src)
            if p.kind == "sum":
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
        res, _ = _group(pa.table(cols), group, aggs, False)
        out: dict[str, pa.ChunkedArray | pa.Array] = {g: res.column(g) for g in group}
        out["__n"] = res.column("__w_sum")
        for p in self.parts:
            name = f"{p.name}_sum"
            out[p.name] = res.column(name) if name in res.column_names else out["__n"]
        for col, fn, name in extra:
            out[name] = res.column(f"{col}_{fn}")
        return pa.table(out)

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
        res, gid = _group(table, group, aggs, need_gid)
        cols: dict[str, pa.ChunkedArray | pa.Array] = {g: res.column(g) for g in group}
        cols["__n"] = res.column("__n_sum")
        for p in self.parts:
            if p.kind in ("sum", "nn"):
                cols[p.name] = res.column(f"{p.name}_sum")
            elif p.kind in ("min", "max"):
                cols[p.name] = res.column(f"{p.name}_{p.kind}")
            elif p.kind == "cd":
                assert gid is not None
                cols[p.name] = _union_lists(table.column(p.name), gid, res.num_rows)
            else:
                assert gid is not None
                best_y = res.column(f"{p.name}y_{p.kind[:3]}")
                cols[p.name + "y"] = best_y
                x = _best_x(table.column(p.name + "y"), table.column(p.name + "x"), gid, best_y)
                cols[p.name + "x"] = x
        for col, fn in extra:
            cols[col] = res.column(f"{col}_{fn}")
        return pa.table(cols), gid

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
                    total = pc.divide(pc.cast(total, pa.float64()), n)
                out[a.name] = total
            elif a.fn == "count_distinct":
                n = pc.list_value_length(table.column(parts[0].name))
                out[a.name] = pc.fill_null(pc.cast(n, pa.int64()), 0)
            elif a.fn in ("max_by", "min_by"):
                out[a.name] = table.column(parts[0].name + "x")
            else:
                out[a.name] = table.column(parts[0].name)
        return out


def _check_weight(aggregates: Sequence[AggregateSpec], schema: pa.Schema, weight: str) -> None:
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


def _sum_type(t: pa.DataType) -> pa.DataType:
    return pa.float64() if pa.types.is_floating(t) else pa.int64()


def _output_type(fn: str, t: pa.DataType) -> pa.DataType:
    if fn in ("count", "count_distinct"):
        return pa.int64()
    if fn == "avg":
        return pa.float64()
    if fn == "sum":
        return _sum_type(t)
    return t


def _group(
    table: pa.Table, group: list[str], aggs: dict[tuple[str, str], str], need_gid: bool
) -> tuple[pa.Table, np.ndarray | None]:
    """``group_by(group).aggregate(aggs)``; with ``need_gid`` also each row's group index."""
    if not need_gid:
        dense = dense_group(table, group, aggs)  # small integer keys: arrays, no hash table
        if dense is not None:
            return dense, None
    spec: list[tuple] = []
    for col, fn in aggs:
        if fn == "count_all":
            spec.append(([], "count_all"))
        elif fn == "distinct":
            spec.append((col, "distinct", _VALID))
        else:
            spec.append((col, fn))
    if need_gid:
        table = table.append_column("__i", pa.array(np.arange(table.num_rows, dtype=np.int64)))
        spec.append(("__i", "list"))
    res = table.group_by(group, use_threads=False).aggregate(spec)
    if not need_gid:
        return res, None
    rows = res.column("__i_list").combine_chunks()
    gid = np.empty(table.num_rows, dtype=np.int64)
    gid[rows.flatten().to_numpy()] = pc.list_parent_indices(rows).to_numpy()
    return res, gid


def _scatter(values: pa.Table, column: str, groups: int) -> pa.Array | pa.ChunkedArray:
    """``values`` has a ``g`` column (distinct group indices); its ``column`` placed at index
    ``g`` of an array of ``groups`` rows (null where no row names that group)."""
    pos = np.full(groups, -1, dtype=np.int64)
    pos[values.column("g").to_numpy()] = np.arange(values.num_rows, dtype=np.int64)
    return values.column(column).take(pa.array(pos, mask=pos < 0))


def _best_x(y: pa.ChunkedArray, x: pa.ChunkedArray, gid: np.ndarray, best_y: pa.ChunkedArray):  # type: ignore[no-untyped-def]
    """Per group: the smallest ``x`` among the rows whose ``y`` equals the group's best."""
    hit = pc.fill_null(pc.equal(y, best_y.take(pa.array(gid))), False)
    rows = np.flatnonzero(hit.to_numpy(zero_copy_only=False))
    cand = pa.table({"g": gid[rows], "x": x.take(pa.array(rows))})
    res = cand.group_by(["g"], use_threads=False).aggregate([("x", "min")])
    return _scatter(res, "x_min", len(best_y))


def _union_lists(lists: pa.ChunkedArray, gid: np.ndarray, groups: int):  # type: ignore[no-untyped-def]
    """Per group: the distinct values of all the lists of its rows (null for none)."""
    arr = lists.combine_chunks()
    values = arr.flatten()
    parent = pc.list_parent_indices(arr).to_numpy()
    pairs = pa.table({"g": gid[parent], "v": values})
    res = pairs.group_by(["g"], use_threads=False).aggregate([("v", "distinct", _VALID)])
    return _scatter(res, "v_distinct", groups)
