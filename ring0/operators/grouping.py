"""Grouped aggregation for ``ring0.operators.aggregates``: ``Table.group_by`` plus what it lacks.

* ``group_by(table, group, aggs, need_gid)`` is ``table.group_by(group).aggregate(aggs)``
  (``aggs``: ``(column, fn) -> result column``; ``fn`` ``count_all``, ``distinct`` (non-null
  values only), or any Arrow hash aggregate). Without ``need_gid`` it first asks
  ``ring0.operators.dense`` (small integer keys, no hash table); with it, it also returns
  ``gid``: for every row of ``table``, the index of its group's row in the result.
* ``best_x`` (``max_by``/``min_by``): per group, the smallest ``x`` among the rows whose ``y``
  equals the group's best ``y``, so a tie never depends on arrival order.
* ``union_lists`` (``count_distinct``): per group, the distinct values of all its rows' lists.

Both pickers return one row per group, in group index order, null for a group with no
candidate (every ``y`` null; only empty lists).

Not guaranteed: the row order of ``group_by``'s result (``gid`` is what aligns rows to groups).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ring0.operators.dense import dense_group

_VALID = pc.CountOptions(mode="only_valid")


def group_by(
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


def best_x(y: pa.ChunkedArray, x: pa.ChunkedArray, gid: np.ndarray, best_y: pa.ChunkedArray):  # type: ignore[no-untyped-def]
    """Per group: the smallest ``x`` among the rows whose ``y`` equals the group's best."""
    hit = pc.fill_null(pc.equal(y, best_y.take(pa.array(gid))), False)
    rows = np.flatnonzero(hit.to_numpy(zero_copy_only=False))
    cand = pa.table({"g": gid[rows], "x": x.take(pa.array(rows))})
    res = cand.group_by(["g"], use_threads=False).aggregate([("x", "min")])
    return _scatter(res, "x_min", len(best_y))


def union_lists(lists: pa.ChunkedArray, gid: np.ndarray, groups: int):  # type: ignore[no-untyped-def]
    """Per group: the distinct values of all the lists of its rows (null for none)."""
    arr = lists.combine_chunks()
    values = arr.flatten()
    parent = pc.list_parent_indices(arr).to_numpy()
    pairs = pa.table({"g": gid[parent], "v": values})
    res = pairs.group_by(["g"], use_threads=False).aggregate([("v", "distinct", _VALID)])
    return _scatter(res, "v_distinct", groups)


def _scatter(values: pa.Table, column: str, groups: int) -> pa.Array | pa.ChunkedArray:
    """``values`` has a ``g`` column (distinct group indices); its ``column`` placed at index
    ``g`` of an array of ``groups`` rows (null where no row names that group)."""
    pos = np.full(groups, -1, dtype=np.int64)
    pos[values.column("g").to_numpy()] = np.arange(values.num_rows, dtype=np.int64)
    return values.column(column).take(pa.array(pos, mask=pos < 0))
