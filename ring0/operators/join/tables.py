"""Table helpers of the joins: gather rows across chunks, dense codes for key tuples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def take_rows(table: pa.Table, idx: np.ndarray) -> pa.Table:
    """The rows of ``table`` at positions ``idx`` (int64, in range), in ``idx`` order.

    Gathers from each chunk separately, so the cost is the rows taken plus one small take per
    chunk touched, not a copy of the whole table.
    """
    batches = table.to_batches()
    if len(batches) <= 1:
        return table.take(pa.array(idx, pa.int64()))
    starts = np.cumsum([0] + [b.num_rows for b in batches])
    chunk = np.searchsorted(starts, idx, side="right") - 1
    order = np.argsort(chunk, kind="stable")
    bounds = np.searchsorted(chunk[order], np.arange(len(batches) + 1))
    parts = []
    for c in np.flatnonzero(np.diff(bounds)).tolist():
        local = idx[order[bounds[c] : bounds[c + 1]]] - starts[c]
        parts.append(batches[c].take(pa.array(local, pa.int64())))
    taken = pa.Table.from_batches(parts, schema=table.schema)
    if np.all(order[1:] > order[:-1]):  # idx already grouped by chunk in its own order
        return taken
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return taken.combine_chunks().take(pa.array(inverse))


def key_codes(tables: Sequence[pa.Table], keys: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Dense int64 codes of the key tuples, shared across ``tables``; -1 where a key is null.

    ``keys[i]`` names the key columns of ``tables[i]`` (pairwise of equal type). Equal tuples
    get equal codes in every table; codes are < the total row count.
    """
    sizes = [t.num_rows for t in tables]
    codes: np.ndarray | None = None
    for i in range(len(keys[0])):
        chunks = [c for t, k in zip(tables, keys, strict=True) for c in t.column(k[i]).chunks]
        column = pa.chunked_array(chunks, type=tables[0].schema.field(keys[0][i]).type)
        encoded = pc.dictionary_encode(column.combine_chunks())
        idx = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)
        if codes is None:
            codes = idx
            continue
        valid = (codes >= 0) & (idx >= 0)
        combined = codes[valid] * (len(encoded.dictionary) + 1) + idx[valid]
        dense = np.unique(combined, return_inverse=True)[1].reshape(-1)
        codes = np.full(len(idx), -1, np.int64)
        codes[valid] = dense
    assert codes is not None
    return list(np.split(codes, np.cumsum(sizes)[:-1]))
