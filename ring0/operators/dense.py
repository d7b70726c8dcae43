"""The dense-key path of the partial aggregation: small integer keys, counted in arrays.

``dense_group(table, group, aggs)`` answers what ``Table.group_by(group).aggregate``
would — one row per group present, columns ``<group...>``, ``count_all`` and
``<col>_<fn>`` for ``sum``, ``min`` and ``max`` — without a hash table: each group
column's values are shifted to start at 0, combined into one cell index
(``(w - w_min) * span_k + (k - k_min)``), and every aggregate is one ``np.bincount``
or ``np.minimum.at`` / ``np.maximum.at`` over the cells; the groups present are the
cells with a count. About 1–2 ns a row per aggregate instead of a hash probe.

It answers only when the answer is certainly the same as the hash path's, else
returns None (the caller groups with Arrow):

* group columns are integers without nulls, and their value ranges (divided by the
  values' common step: panes are multiples of the window size) multiply to at most
  ``max(2**16, 4 * rows)`` cells (the pane of a tumbling window and a key of up to
  tens of thousands of values: W1, most dashboards);
* aggregates are ``count_all``, ``sum``, ``min``, ``max`` of integer or float columns
  without nulls (a null-skipping count, distinct, ``*_by``, decimals go the hash way: a
  decimal sum must stay exact and be checked for overflow);
* float columns hold no NaN (Arrow's min/max and numpy's differ on NaN);
* an integer sum is exact in float64: ``max|v| * rows < 2**53``.

Float sums add in row order within a batch (as the hash path does; the result is
equal to the hash path's within the tolerance ``tests/tables.py`` states, and
deterministic). Not guaranteed: the order of the result rows (neither path
promises one). ``RS_DENSE_PATH=0`` turns the path off (for A/B benchmarks).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pyarrow as pa

ENABLED = os.environ.get("RS_DENSE_PATH", "1") != "0"
_EXACT = float(2**53)


def magnitude(v: np.ndarray) -> int:
    """The largest absolute value of integer array ``v``, exact (``np.abs`` wraps -2**63)."""
    return max(abs(int(v.min())), abs(int(v.max())))


def dense_group(
    table: pa.Table, group: list[str], aggs: dict[tuple[str, str], str]
) -> pa.Table | None:
    """The grouped aggregates of ``table`` through arrays, or None when not certain."""
    n = table.num_rows
    if not ENABLED or n == 0 or not group:
        return None
    if any(fn not in ("count_all", "sum", "min", "max") for _, fn in aggs):
        return None
    limit = max(1 << 16, 4 * n)
    columns, lows, highs = [], [], []
    for name in group:
        col = table.column(name)
        if not pa.types.is_integer(col.type) or col.null_count or col.type == pa.uint64():
            return None  # (uint64 may not fit the int64 arithmetic below)
        v = col.to_numpy().astype(np.int64, copy=False)
        columns.append(v)
        lows.append(int(v.min()))
        highs.append(int(v.max()))
    steps = [1] * len(group)
    spans = [h - lo + 1 for lo, h in zip(lows, highs, strict=True)]
    # Too many cells: divide columns by their values' common step (panes are multiples
    # of the window's slide), widest first, until the cells fit.
    for i in sorted(range(len(group)), key=lambda i: -spans[i]):
        if math.prod(spans) <= limit:
            break
        if 1 < spans[i] < 1 << 62:  # (a wider range would overflow v - low)
            steps[i] = int(np.gcd.reduce(columns[i] - lows[i]))
            spans[i] = (highs[i] - lows[i]) // steps[i] + 1
    if math.prod(spans) > limit:
        return None
    cell: np.ndarray | None = None
    stride = 1
    for v, low, step, span in zip(columns, lows, steps, spans, strict=True):
        if span > 1:  # one value (a batch inside one pane) adds nothing to the cell
            index = v - low if step == 1 else (v - low) // step
            cell = index if cell is None else cell + index * stride
            stride *= span
    if cell is None:  # every group column holds one value
        cell = np.zeros(n, np.int64)
    values: dict[str, np.ndarray] = {}
    for col_name, fn in aggs:
        if fn == "count_all":
            continue
        if col_name not in values:
            col = table.column(col_name)
            t = col.type
            if col.null_count or not (pa.types.is_integer(t) or pa.types.is_floating(t)):
                return None
            v = col.to_numpy()
            if pa.types.is_floating(t) and np.isnan(v).any():
                return None
            values[col_name] = v
        v = values[col_name]
        if fn == "sum" and v.dtype.kind != "f" and magnitude(v) * n >= _EXACT:
            return None  # (each sum, also of a column a min or max read first)
    counts = np.bincount(cell, minlength=stride)
    present = np.flatnonzero(counts)
    out: dict[str, pa.Array] = {}
    rest = present
    for name, low, step, span in zip(group, lows, steps, spans, strict=True):
        out[name] = pa.array(low + (rest % span) * step, table.schema.field(name).type)
        rest = rest // span
    for (col_name, fn), out_name in aggs.items():
        if fn == "count_all":
            out[out_name] = pa.array(counts[present], pa.int64())
            continue
        v, t = values[col_name], table.schema.field(col_name).type
        if fn == "sum":
            total = np.bincount(cell, weights=v, minlength=stride)[present]
            if pa.types.is_integer(t):
                out[out_name] = pa.array(np.rint(total).astype(np.int64), pa.int64())
            else:
                out[out_name] = pa.array(total, pa.float64())
            continue
        if pa.types.is_integer(t):
            info = np.iinfo(v.dtype)
            start = info.max if fn == "min" else info.min
        else:
            start = np.inf if fn == "min" else -np.inf
        acc = np.full(stride, start, v.dtype)
        (np.minimum if fn == "min" else np.maximum).at(acc, cell, v)
        out[out_name] = pa.array(acc[present], t)
    return pa.table(out)

