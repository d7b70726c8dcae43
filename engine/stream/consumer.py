"""The frame protocol of every process that reads several rings as one stream: workers, sinks.

A ``Consumer`` owns an ``InputSet`` (its input rings), a ``Watermarks`` (the
minimum over them) and an ``Aligner`` (barriers). ``consume()`` reads frames
until every input has ended and calls one method per event:

* DATA → ``on_data(input, batch)``; the frame is released right after the
  call, so a consumer that keeps rows copies them.
* WATERMARK, EOS, and a quiet ``tick_s`` with no frame (an input may have gone
  idle) → ``on_watermark(wm)`` whenever the minimum over inputs moves.
* a BARRIER (or an EOS) that completes the alignment of epoch N →
  ``on_barrier(N)``: every row of epoch N was handed to ``on_data`` and none of
  N + 1 yet.
* after every frame or quiet tick → ``on_tick()`` (control messages).

An EOS marked stopped (``EOS_STOPPED``: a drain, resumed by a later run) holds
that input's watermark instead of ending it. After ``consume()`` returns, the
subclass finishes (``finish``) as its role needs: ``stopped`` tells whether
some input stopped rather than ended.

Not guaranteed: an order of frames across inputs; a frame on one input can
wait up to ``InputSet``'s rotation time while another input is read.
"""

from __future__ import annotations

import pyarrow as pa

from engine.shm import FrameKind
from engine.stream.alignment import Aligner
from engine.stream.inputs import InputSet
from engine.stream.watermarks import Watermarks

_DATA, _WATERMARK = int(FrameKind.DATA), int(FrameKind.WATERMARK)
_BARRIER, _EOS = int(FrameKind.BARRIER), int(FrameKind.EOS)


class Consumer:
    """Base of the worker and the sink runner (see the module docstring)."""

    tick_s: float | None = None  # wait at most this long for a frame (None: block)

    def __init__(self, inputs: InputSet, marks: Watermarks) -> None:
        self.inputs = inputs
        self.marks = marks
        inputs.marks = marks.marks  # read the input holding the watermark back first
        self.aligner = Aligner(inputs)

    # -- events (subclasses override) -----------------------------------------------------
    def on_data(self, input: int, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def on_watermark(self, watermark: int) -> None:
        pass

    def on_barrier(self, epoch: int) -> None:
        pass

    def on_tick(self) -> None:
        pass

    @property
    def stopped(self) -> bool:
        """Some input stopped (a drain) instead of ending: state stays open for the next run."""
        return any(self.inputs.stopped)

    # -- the loop -------------------------------------------------------------------------
    def consume(self) -> None:
        """Read frames until every input has ended, calling the event methods."""
        inputs, marks, aligner = self.inputs, self.marks, self.aligner
        while True:
            item = inputs.next(timeout=self.tick_s)
            self.on_tick()
            if item is None:
                if inputs.finished:
                    return
                self._advance()
                continue
            i, frame = item
            reader = inputs.readers[i]
            kind = frame.kind
            marks.seen(i)
            done = None
            if kind == _DATA:
                batch = reader.batch(frame)
                self.on_data(i, batch)
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
                done = aligner.on_eos()
            reader.release(frame)
            if kind in (_WATERMARK, _EOS):
                self._advance()
            if done is not None:
                self.on_barrier(done)

    def _advance(self) -> None:
        wm = self.marks.advance()
        if wm is not None:
            self.on_watermark(wm)
