"""Reading several rings as one: round-robin polls, pausing for alignment, a bounded wait.

``InputSet.next(timeout)`` returns ``(input index, frame)`` for the next
available frame, taking at most ``burst`` frames from one input before moving
on (so a fast input cannot starve the others). It returns None once every
input has delivered EOS (``finished`` is then true) or when ``timeout``
seconds pass without a frame (``timeout=None``: wait as long as it takes).

An EOS frame's value says how the stream ended: ``EOS_END`` (0) — the data
ended (a bounded source is exhausted): flush everything; ``EOS_STOPPED`` (1) —
a drain stopped it with checkpoints on and a later run resumes it from the
final checkpoint: state stays open (no window is closed early). ``stopped[i]``
is true after input ``i`` delivered an ``EOS_STOPPED``.

Event-time alignment. With ``marks`` set (each input's watermark, the consumer's
``Watermarks.marks``), the input whose watermark is alone the lowest — the one
holding the joint watermark back — is the only one read while it keeps sending:
its rows let windows close and joins trim, where rows of inputs already ahead
would only wait in the operators' state (an interval join would buffer them).
Inputs ahead fill their rings and their sources wait (as the one process of
``engine.local`` reads the lowest source first). The rule lapses for an input
that has sent nothing for ``QUIET_S`` (an empty partition, an idle or slow
source): the others are then read round-robin until it sends again, so a silent
input never stalls the rest. Ties (every mark equal, as without event time) and
an input with no watermark yet (its rows may have no event time at all) are
read round-robin.

``pause(i)`` stops reading input ``i`` (barrier alignment: its frames after
the barrier stay in its ring) until ``resume_all()``. With one readable input
left the wait blocks on that ring's own wait strategy; with several it waits
on one of them for at most ``multi_wait_s`` and rotates (there is no single
wake-up for many rings yet, so a frame on another input can wait up to that
long — 1 ms by default).
"""

from __future__ import annotations

import time

from engine.errors import ProtocolError
from engine.shm import FrameKind, Ring
from engine.shm.reader import Frame, RingReader
from engine.stream.watermarks import NONE

_EOS = int(FrameKind.EOS)
QUIET_S = 0.05  # an input silent this long no longer holds the others back (alignment)
EOS_END = 0  # EOS value: the stream's data ended
EOS_STOPPED = 1  # EOS value: the stream stopped; a later run resumes it from the checkpoint


class InputSet:
    def __init__(self, names: list[str], burst: int = 8, multi_wait_s: float = 0.001) -> None:
        self.rings = [Ring.attach(n) for n in names]
        self.readers: list[RingReader] = [r.reader() for r in self.rings]
        self.done = [False] * len(names)
        self.stopped = [False] * len(names)
        self.paused = [False] * len(names)
        self._burst = burst
        self._multi_wait = multi_wait_s
        self._cur = 0
        self._taken = 0
        self.marks: list[int] | None = None  # per input: its watermark (alignment)
        self._last = [time.monotonic()] * len(names)  # per input: when it last sent a frame

    @property
    def finished(self) -> bool:
        return all(self.done)

    def pause(self, i: int) -> None:
        self.paused[i] = True

    def resume_all(self) -> None:
        self.paused = [False] * len(self.paused)

    def _readable(self, i: int) -> bool:
        return not self.done[i] and not self.paused[i]

    def next(self, timeout: float | None = None) -> tuple[int, Frame] | None:
        n = len(self.readers)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            lead = self._leader() if self.marks is not None and n > 1 else None
            if lead is not None:  # alignment: the input holding the watermark back, alone
                f = self.readers[lead].poll()
                if f is None:
                    now = time.monotonic()
                    wait = self._last[lead] + QUIET_S - now
                    if deadline is not None:
                        if deadline <= now:
                            return None
                        wait = min(wait, deadline - now)
                    f = self.readers[lead].read(timeout=max(wait, 0.0))
                if f is not None:
                    return self._deliver(lead, f)
                continue
            for _ in range(n):  # round-robin, at most `burst` frames from one input in a row
                i = self._cur
                if self._readable(i) and self._taken < self._burst:
                    f = self.readers[i].poll()
                    if f is not None:
                        self._taken += 1
                        return self._deliver(i, f)
                self._cur = (i + 1) % n
                self._taken = 0
            live = [i for i in range(n) if self._readable(i)]
            if not live and self.finished:
                return None
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            if not live:  # Aligner resumes every input once the last one paused
                raise ProtocolError("every input that has not ended is paused for alignment")
            if len(live) == 1:  # block on the last input's own wait strategy
                i, wait = live[0], left
            else:
                i = live[self._cur % len(live)]
                wait = self._multi_wait if left is None else min(self._multi_wait, left)
            f = self.readers[i].read(timeout=wait)
            if f is not None:
                return self._deliver(i, f)

    def _leader(self) -> int | None:
        """The readable input whose watermark is below every other readable one's, if it
        sent a frame within ``QUIET_S``."""
        marks = self.marks
        assert marks is not None
        best, low, tie = None, 0, False
        for i in range(len(self.readers)):
            if not self._readable(i):
                continue
            m = marks[i]
            if best is None or m < low:
                best, low, tie = i, m, False
            elif m == low:
                tie = True
        if best is None or tie or low == NONE or time.monotonic() - self._last[best] > QUIET_S:
            return None
        return best

    def _deliver(self, i: int, f: Frame) -> tuple[int, Frame]:
        self._last[i] = time.monotonic()
        if f.kind == _EOS:
            self.done[i] = True
            self.stopped[i] = f.value == EOS_STOPPED
        return i, f

    def close(self) -> None:
        for r in self.readers:
            r.close()
        for ring in self.rings:
            ring.close()
