"""The contract every Ring 0 operator keeps (stateless and stateful alike).

A worker runs a chain of operators per input stream (filter, project, udf),
optionally a two-input operator (a join), then more steps. It drives each
operator with these calls, from one thread, in any interleaving, after
``__init__``:

* ``process(batch, port=0) -> list[RecordBatch]`` — one input batch (``port``
  is 0, or 0/1 for a two-input operator: left/right). Returns the output it
  produces *now* (a filter returns its rows at once; a window on close returns
  ``[]`` and buffers partials). The batch may live in ring memory that is
  released right after the call: an operator that keeps rows must copy them
  (``take``, ``filter``, a group-by result: all copy; ``pa.concat_tables``, a
  slice, ``select`` do not).
* ``on_watermark(watermark) -> list[RecordBatch]`` — event time (ms) has
  reached ``watermark`` on every input; the operator emits what this closes
  (windows whose end <= watermark) and frees that state. Never called with a
  lower value than before.
* ``finish() -> list[RecordBatch]`` — the input is bounded and has ended:
  emit everything still open.
* ``snapshot() -> dict[str, pa.Table]`` and ``restore(state)`` — state as
  named Arrow tables (written to Arrow IPC files with checksums by the
  checkpoint code). ``restore`` is called on a fresh instance built with the
  same arguments, before any other call, and must make it behave exactly as
  the snapshotted one would (open windows, watermark, counters). Scalars go
  into a one-row table or the schema metadata. A stateless operator returns
  ``{}``.

A keyed operator has a ``key`` attribute (its grouping columns; ``[]``: global).
A global one normally runs in every worker as partial results merged by a
``[[query.final]]`` step; one with ``needs_every_row`` (the over step) must see every
row in one sequence, so the plan refuses it in the workers without a key.

Every output batch has exactly ``output_schema``. Counters of rows dropped,
each shown in the run's summary: ``late_rows`` (behind watermark + allowed
lateness), ``null_time_rows`` (a null event time), ``null_rows`` (a join: a
null time or key), ``out_of_range_rows`` (an event time outside
``engine.timeunits``' range). A window built with a late-data output collects
its late rows (input schema) for ``take_late() -> list[RecordBatch]``.

Not guaranteed: output batch boundaries or row order within a batch; an
operator may emit empty lists for any call. Vectorised: no per-row Python on
the hot path.
"""

from __future__ import annotations

import pyarrow as pa

from engine.errors import StateError


class Operator:
    """Base class: defaults for a stateless one-input operator (see the module docstring)."""

    inputs: int = 1
    needs_every_row: bool = False  # keyless, it cannot run as partials merged in a final stage
    late_rows: int = 0  # rows dropped: behind the watermark
    null_time_rows: int = 0  # rows dropped: a null event time
    null_rows: int = 0  # rows dropped by a join: a null time or a null key
    out_of_range_rows: int = 0  # rows dropped: an event time outside engine.timeunits' range

    @property
    def output_schema(self) -> pa.Schema:
        raise NotImplementedError

    def process(self, batch: pa.RecordBatch, port: int = 0) -> list[pa.RecordBatch]:
        raise NotImplementedError

    def on_watermark(self, watermark: int) -> list[pa.RecordBatch]:
        return []

    def finish(self) -> list[pa.RecordBatch]:
        return []

    def snapshot(self) -> dict[str, pa.Table]:
        return {}

    def restore(self, state: dict[str, pa.Table]) -> None:
        if state:
            raise StateError(f"{type(self).__name__} is stateless; got state {sorted(state)}")

    def take_late(self) -> list[pa.RecordBatch]:
        return []
