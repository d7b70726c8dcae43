"""What the window kinds share: state tables checked on restore, runs, slices by slot.

``Owner`` is what a window kind (``slots.Slots``, ``sessions.Sessions``) may use of its
``WindowAggregate``: the aggregate plan, the keys, the emit mode and lateness, and
the helpers that turn merged partials into output rows.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from engine.errors import StateError
from ring0.operators.aggregates import Plan

NONE = -(2**63)
END = 2**63 - 1  # "every window": in-range times plus any size end before this
COMPACT_AFTER = 16  # close mode merges a slot's partials after this many batches


class Owner(Protocol):
    plan: Plan
    keys: list[str]
    key: list[str]
    key_fields: list[pa.Field]
    emit: str
    lateness: int
    watermark: int
    bound_types: list[pa.DataType]
    window: Any

    def partial_schema(self, group: list[pa.Field]) -> pa.Schema: ...

    def result(self, groups: pa.Table, start: pa.Array, end: pa.Array) -> pa.Table: ...

    def closed(self, results: list[pa.Table]) -> list[pa.RecordBatch]: ...

    def changelog(self, before: pa.Table | None, after: pa.Table) -> list[pa.RecordBatch]: ...


def checked(table: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    if not table.schema.equals(schema):
        raise StateError(
            f"window state table {name!r} has schema {table.schema}, expected {schema}"
        )
    return table


def runs(columns: list[np.ndarray]) -> list[tuple[int, int]]:
    """``(start, stop)`` of the runs of equal values in sorted columns."""
    n = len(columns[0])
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for c in columns:
        change[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(change).tolist()
    return list(zip(starts, [*starts[1:], n], strict=True))


def split_by(table: pa.Table, cols: list[str]) -> list[tuple[tuple[int, ...], pa.Table]]:
    """``table`` cut into one zero-copy slice per distinct value of the int columns ``cols``."""
    if table.num_rows == 0:
        return []
    values = [table.column(c).to_numpy() for c in cols]
    if all(v.min() == v.max() for v in values):
        return [(tuple(int(v[0]) for v in values), table)]
    order = np.lexsort(values[::-1])
    table, values = table.take(pa.array(order)), [v[order] for v in values]
    return [
        (tuple(int(v[lo]) for v in values), table.slice(lo, hi - lo)) for lo, hi in runs(values)
    ]


