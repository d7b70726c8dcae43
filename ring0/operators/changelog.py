"""Changelog output of aggregations in update mode: retract the old value, insert the new one.

An operator in update mode keeps, per group, the partial aggregates it has emitted so far.
After each input batch it folds the batch's partials into that state (``fold``) and emits, for
every group the batch touched, a ``-1`` row with the values it had emitted before (when it had
emitted that group before) and a ``+1`` row with the new values (``changes``). The output
column ``_change`` (int8) is last. A consumer that adds up ``_change``-weighted rows per group
(or applies them in order: within one batch every ``-1`` row comes before every ``+1`` row)
holds the current result.

A changelog *input* (rows weighted by their own ``_change``, ``ring0.operators.aggregates``)
can take a group's row count ``__n`` back to 0: ``fold(..., drop_empty=True)`` then removes
the group from the state and from ``after``, so its output is only the ``-1`` row of what was
emitted before; a group that comes back later has no state and is emitted fresh (``+1``).
The state always holds exactly the groups emitted and not yet retracted.

Not guaranteed: row order among the ``-1`` rows or among the ``+1`` rows; a group whose new
values equal its old ones is still retracted and re-inserted.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ring0.operators.aggregates import Plan

CHANGE = pa.field("_change", pa.int8())


def fold(
    plan: Plan,
    state: pa.Table | None,
    update: pa.Table,
    group: list[str],
    drop_empty: bool = False,
) -> tuple[pa.Table, pa.Table | None, pa.Table]:
    """Merge ``update`` (partial rows, any number per group) into ``state`` (one partial row
    per group). Returns ``(new_state, before, after)``: ``before`` holds the old state rows of
    the groups ``update`` touched (``None`` if there was no state), ``after`` their new rows.
    ``drop_empty``: groups whose row count ``__n`` is now 0 leave ``new_state`` and ``after``."""
    if state is None or state.num_rows == 0:
        merged, _ = plan.merge(update, group)
        merged = nonempty(merged) if drop_empty else merged
        return merged, None, merged
    both = pa.concat_tables([state, update.select(state.column_names)])
    merged, gid = plan.merge(both, group, want_gid=True)
    assert gid is not None
    touched = np.zeros(merged.num_rows, dtype=bool)
    touched[gid[state.num_rows :]] = True
    before = state.filter(pa.array(touched[gid[: state.num_rows]]))
    if drop_empty:
        kept = pc.not_equal(merged.column("__n"), 0).to_numpy(zero_copy_only=False)
        return merged.filter(pa.array(kept)), before, merged.filter(pa.array(touched & kept))
    return merged, before, merged.filter(pa.array(touched))


def nonempty(groups: pa.Table) -> pa.Table:
    """The partial rows whose row count ``__n`` is not 0."""
    return groups.filter(pc.not_equal(groups.column("__n"), 0))


def changes(before: pa.Table | None, after: pa.Table, schema: pa.Schema) -> list[pa.RecordBatch]:
    """``before`` rows with ``_change = -1`` then ``after`` rows with ``+1``, as ``schema``
    (the output columns of ``before``/``after`` followed by ``_change``)."""
    parts = []
    for rows, sign in ((before, -1), (after, 1)):
        if rows is not None and rows.num_rows:
            flag = pa.array(np.full(rows.num_rows, sign, dtype=np.int8))
            parts.append(rows.append_column(CHANGE, flag))
    if not parts:
        return []
    out = pa.concat_tables(parts).cast(schema).combine_chunks()
    return out.to_batches()
