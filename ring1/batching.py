"""Accumulate a source's small batches into ring-sized ones, by rows and by time.

``Batcher(max_rows, max_wait_s)``:

* ``add(batch)`` appends rows and returns the batches that are now full:
  ``max_rows`` rows each when gathered (a large input is cut into several; the
  rest stays pending). Pending rows keep their arrival order. A batch of at least
  half ``max_rows`` that arrives while nothing is pending is not gathered with
  others: it goes on as it is (cut into ``max_rows`` pieces where larger, a last
  piece under half ``max_rows`` then pending), so a source whose batches do not
  divide ``max_rows`` evenly is not copied again here.
* ``due()`` is true once the oldest pending row has waited ``max_wait_s``
  (measured with ``clock``, from the ``add`` that brought it); the runtime then
  calls ``take()``, which returns every pending row as one batch (or None).
* ``deadline()`` is the clock time at which ``due()`` becomes true (None when
  nothing is pending), for a runtime that sleeps until then; ``held()`` lists the
  pending rows (for a watermark that must not pass them).

Invariants: every row added comes out exactly once, in order; an output batch
has at most ``max_rows`` rows (from ``add``, at least half of it); all batches
have the schema of the first one (a different schema raises
``SchemaMismatchError``). Zero-row batches are
ignored. Concatenation copies the buffers once (``pa.concat_batches``);
a batch that arrives alone and full is passed through without copying.

Not guaranteed: ``due`` is not a timer — nothing happens unless the caller
asks (a source loop calls ``due()`` between polls).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pyarrow as pa

from engine.errors import ConfigError, SchemaMismatchError


class Batcher:
    def __init__(
        self,
        max_rows: int,
        max_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_rows < 1:
            raise ConfigError(f"batching max_rows={max_rows} must be >= 1")
        if max_wait_s < 0:
            raise ConfigError(f"batching max_wait_s={max_wait_s} must be >= 0")
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.schema: pa.Schema | None = None
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0
        self._since: float | None = None

    @property
    def pending_rows(self) -> int:
        return self._rows

    def add(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """Append ``batch``; return the batches now complete: ``max_rows`` rows each when
        gathered, from half of it up to ``max_rows`` when passed on as they came."""
        if self.schema is None:
            self.schema = batch.schema
        elif not batch.schema.equals(self.schema):
            raise SchemaMismatchError(
                f"batching: batch schema {batch.schema} differs from the stream's {self.schema}"
            )
        if batch.num_rows == 0:
            return []
        if not self._pending and 2 * batch.num_rows >= self.max_rows:  # large: as it is
            n = self.max_rows
            ready = [batch] if batch.num_rows <= n else [
                batch.slice(i, n) for i in range(0, batch.num_rows, n)]  # fmt: skip
            if 2 * ready[-1].num_rows < n:  # a small last piece waits for more
                tail = ready.pop()
                self._pending, self._rows, self._since = [tail], tail.num_rows, self.clock()
            return ready
        if not self._pending:
            self._since = self.clock()
        self._pending.append(batch)
        self._rows += batch.num_rows
        ready: list[pa.RecordBatch] = []
        while self._rows >= self.max_rows:
            ready.append(self._cut(self.max_rows))
        if not self._pending:
            self._since = None
        elif ready:
            # What is left is the tail of the batch that just arrived.
            self._since = self.clock()
        return ready

    def held(self) -> list[pa.RecordBatch]:
        """The pending rows, as the batches (or tails of batches) they came in."""
        return list(self._pending)

    def due(self) -> bool:
        """True when pending rows have waited ``max_wait_s`` or longer."""
        return self._since is not None and self.clock() - self._since >= self.max_wait_s

    def deadline(self) -> float | None:
        return None if self._since is None else self._since + self.max_wait_s

    def take(self) -> pa.RecordBatch | None:
        """Every pending row as one batch (at most ``max_rows``), or None if none."""
        if not self._rows:
            return None
        out = self._cut(self._rows)
        self._since = None
        return out

    def _cut(self, rows: int) -> pa.RecordBatch:
        """Remove the first ``rows`` pending rows (``rows <= pending``) as one batch."""
        parts: list[pa.RecordBatch] = []
        need = rows
        while need:
            head = self._pending[0]
            if head.num_rows <= need:
                parts.append(head)
                self._pending.pop(0)
                need -= head.num_rows
            else:
                parts.append(head.slice(0, need))
                self._pending[0] = head.slice(need)
                need = 0
        self._rows -= rows
        if len(parts) == 1:
            return parts[0]
        return pa.concat_batches(parts)
