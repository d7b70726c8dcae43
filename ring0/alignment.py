"""Barrier alignment and the watermark over several inputs (DESIGN.md §3, §5 step 3).

``Aligner``: once ``BARRIER(N)`` arrives on an input, that input is paused
(its later frames belong to epoch N + 1) until ``BARRIER(N)`` has arrived on
every input that has not ended; then ``on_barrier``/``on_eos`` return N and
every input is resumed. Barrier ids are strictly increasing per input.

``Watermarks``: the watermark is the minimum over inputs; an input that
ended counts as +infinity, one that stopped (``stop``: it resumes in a later
run) holds its last watermark and never goes idle; an input silent for longer
than its idle timeout
stops holding the minimum back until it delivers a frame again (its late
rows are then late: the price of not waiting forever). ``current()`` is None
while some live input has not sent a watermark yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pyarrow as pa

from engine.shm import FrameKind
from ring0.inputs import InputSet

_DATA, _WATERMARK = int(FrameKind.DATA), int(FrameKind.WATERMARK)
_BARRIER, _EOS = int(FrameKind.BARRIER), int(FrameKind.EOS)

NONE = -(2**63)
DONE = 2**63 - 1


class Aligner:
    def __init__(self, inputs: InputSet) -> None:
        self.inputs = inputs
        self.pending: int | None = None
        self._arrived: set[int] = set()
        self._started = 0
        self.alignment_ns = 0  # of the last completed alignment

    def on_barrier(self, i: int, epoch: int) -> int | None:
        if self.pending is None:
            self.pending, self._started = epoch, time.monotonic_ns()
        elif epoch != self.pending:
            from engine.errors import CorruptFrameError

            raise CorruptFrameError(
                f"input {i} sent BARRIER({epoch}) while BARRIER({self.pending}) is aligning"
            )
        self._arrived.add(i)
        self.inputs.pause(i)
        return self._complete()

    def on_eos(self, i: int) -> int | None:
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


class Watermarks:
    def __init__(self, idle_timeout_s: list[float]) -> None:
        n = len(idle_timeout_s)
        self.marks = [NONE] * n
        self.idle_timeout = list(idle_timeout_s)  # 0 = never idle
        self.last_seen = [time.monotonic()] * n
        self.ended = [False] * n
        self.emitted = NONE  # the last watermark handed to the operators

    def seen(self, i: int) -> None:
        self.last_seen[i] = time.monotonic()

    def update(self, i: int, value: int) -> None:
        self.marks[i] = max(self.marks[i], value)

    def end(self, i: int) -> None:
        self.ended[i] = True
        self.marks[i] = DONE

    def stop(self, i: int) -> None:
        """Input ``i`` stopped for now: its watermark stays where it is (its rows resume)."""
        self.idle_timeout[i] = 0.0

    def current(self) -> int | None:
        now = time.monotonic()
        live = [
            m for i, m in enumerate(self.marks)
            if not self.ended[i]
            and not (self.idle_timeout[i] and now - self.last_seen[i] > self.idle_timeout[i])
        ]  # fmt: skip
        if not live:
            return DONE if all(self.ended) else None
        low = min(live)
        return None if low == NONE else low

    def advance(self) -> int | None:
        """The new watermark if it moved past the last one handed out, else None."""
        low = self.current()
        if low is None or low <= self.emitted or low == DONE:
            return None
        self.emitted = low
        return low


def drive(
    inputs: InputSet,
    marks: Watermarks,
    aligner: Aligner,
    *,
    on_data: Callable[[int, pa.RecordBatch], None],
    on_watermark: Callable[[int], None],
    on_epoch: Callable[[int], None],
    timeout: float | None = None,
    on_tick: Callable[[], None] | None = None,
) -> None:
    """The frame protocol of every consumer of several rings (worker, sink), until all end.

    DATA → ``on_data(input, batch)`` (the frame is released right after it);
    WATERMARK, EOS and a quiet ``timeout`` (an input may have gone idle) →
    ``on_watermark(wm)`` whenever the minimum over inputs moves; a BARRIER or
    EOS that completes an alignment → ``on_epoch(N)``. An EOS marked stopped
    holds that input's watermark (it resumes in a later run). ``on_tick`` runs
    after every frame or timeout (control messages).
    """
    while True:
        item = inputs.next(timeout=timeout)
        if on_tick is not None:
            on_tick()
        if item is None:
            if inputs.finished:
                return
            wm = marks.advance()
            if wm is not None:
                on_watermark(wm)
            continue
        i, frame = item
        reader = inputs.readers[i]
        kind = frame.kind
        marks.seen(i)
        done = None
        if kind == _DATA:
            batch = reader.batch(frame)
            on_data(i, batch)
            del batch
        elif kind == _WATERMARK:
            marks.update(i, frame.value)
        elif kind == _BARRIER:
            done = aligner.on_barrier(i, frame.value)
        elif kind == _EOS:
            if inputs.stopped[i]:
                marks.stop(i)
            else:
                marks.end(i)
            done = aligner.on_eos(i)
        reader.release(frame)
        if kind in (_WATERMARK, _EOS):
            wm = marks.advance()
            if wm is not None:
                on_watermark(wm)
        if done is not None:
            on_epoch(done)
