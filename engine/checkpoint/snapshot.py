"""An operator graph's state, with the watermark it had reached, to a state file and back.

Workers (epoch step 3) and sinks with a final stage (step 4) snapshot their graph
(``snapshot() -> {name: table}``) into one state file through the store, adding a
one-row table ``stream/meta`` with the watermark already handed to the graph; a
restarted process loads that file and restores both. Nothing here knows what the
graph is: anything with ``snapshot()`` and ``restore(tables)`` works.
"""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa

from engine.checkpoint.manifest import Role, StateFileRef
from engine.checkpoint.store import CheckpointStore
from engine.stream.watermarks import NONE

META = "stream/meta"
_OLD_META = "worker/meta"  # the same table, as written before ringstream 0.2


class Snapshottable(Protocol):
    def snapshot(self) -> dict[str, pa.Table]: ...

    def restore(self, state: dict[str, pa.Table]) -> None: ...


def save(
    store: CheckpointStore,
    epoch: int,
    role: Role,
    index: int,
    graph: Snapshottable,
    watermark: int,
) -> StateFileRef:
    """Write ``graph``'s tables and ``watermark`` as ``role`` ``index``'s state of ``epoch``."""
    tables = graph.snapshot()
    tables[META] = pa.table({"watermark": pa.array([watermark], pa.int64())})
    return store.write_state(epoch, index, tables, role)


def load(store: CheckpointStore, ref: StateFileRef | None, graph: Snapshottable) -> int:
    """Restore ``graph`` from the state file ``ref`` (verified); the watermark it had reached."""
    if ref is None:
        return NONE
    state = store.read_state(ref)
    meta = state.pop(META, None)
    if meta is None:
        meta = state.pop(_OLD_META, None)
    graph.restore(state)
    if meta is not None and meta.num_rows:
        return int(meta.column("watermark")[0].as_py())
    return NONE
