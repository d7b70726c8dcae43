"""Barrier alignment over several inputs (epoch step 3 in a worker, step 4 in a sink).

``Aligner``: once ``BARRIER(N)`` arrives on an input, that input is paused (its
later frames belong to epoch N + 1) until ``BARRIER(N)`` has arrived on every
input that has not ended; then ``on_barrier``/``on_eos`` return N and every
input is resumed. Barrier ids are strictly increasing per input; a barrier of
another epoch while N is aligning is a ``ProtocolError``.
"""

from __future__ import annotations

import time

from engine.errors import ProtocolError
from engine.stream.inputs import InputSet


class Aligner:
    def __init__(self, inputs: InputSet) -> None:
        self.inputs = inputs
        self.pending: int | None = None
        self._arrived: set[int] = set()
        self._started = 0
        self.alignment_ns = 0  # of the last completed alignment

    def on_barrier(self, i: int, epoch: int) -> int | None:
        """Input ``i`` delivered BARRIER(epoch): the epoch, if that completes its alignment."""
        if self.pending is None:
            self.pending, self._started = epoch, time.monotonic_ns()
        elif epoch != self.pending:
            raise ProtocolError(
                f"input {i} sent BARRIER({epoch}) while BARRIER({self.pending}) is aligning"
            )
        self._arrived.add(i)
        self.inputs.pause(i)
        return self._complete()

    def on_eos(self) -> int | None:
        """An input ended: the aligning epoch, if it waited only for that input."""
        return self._complete() if self.pending is not None else None

    def _complete(self) -> int | None:
        waiting = [
            i for i in range(len(self.inputs.done))
            if not self.inputs.done[i] and i not in self._arrived
        ]  # fmt: skip
        if waiting:
            return None
        epoch, self.pending = self.pending, None
        self._arrived.clear()
        self.inputs.resume_all()
        self.alignment_ns = time.monotonic_ns() - self._started
        return epoch
