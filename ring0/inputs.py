"""Reading several rings as one: round-robin polls, then a bounded wait.

``InputSet.next()`` returns ``(input index, frame)`` for the next available
frame, taking at most ``burst`` frames from one input before moving on (so a
fast input cannot starve the others), or None once every input has delivered
EOS. With one input left it blocks on that ring's own wait strategy; with
several it waits on one of them for at most ``multi_wait_s`` and rotates
(there is no single wake-up for many rings yet, so a frame on another input
can wait up to that long — 1 ms by default).
"""

from __future__ import annotations

from engine.shm import FrameKind, Ring
from engine.shm.reader import Frame, RingReader

_EOS = int(FrameKind.EOS)


class InputSet:
    def __init__(self, names: list[str], burst: int = 8, multi_wait_s: float = 0.001) -> None:
        self.rings = [Ring.attach(n) for n in names]
        self.readers: list[RingReader] = [r.reader() for r in self.rings]
        self.done = [False] * len(names)
        self._burst = burst
        self._multi_wait = multi_wait_s
        self._cur = 0
        self._taken = 0

    def next(self) -> tuple[int, Frame] | None:
        n = len(self.readers)
        while True:
            for _ in range(n):  # round-robin, at most `burst` frames from one input in a row
                i = self._cur
                if not self.done[i] and self._taken < self._burst:
                    f = self.readers[i].poll()
                    if f is not None:
                        self._taken += 1
                        return self._deliver(i, f)
                self._cur = (i + 1) % n
                self._taken = 0
            live = [i for i in range(n) if not self.done[i]]
            if not live:
                return None
            if len(live) == 1:  # block on the last input's own wait strategy
                i, wait = live[0], None
            else:
                i, wait = live[self._cur % len(live)], self._multi_wait
            f = self.readers[i].read(timeout=wait)
            if f is not None:
                return self._deliver(i, f)

    def _deliver(self, i: int, f: Frame) -> tuple[int, Frame]:
        if f.kind == _EOS:
            self.done[i] = True
        return i, f

    def close(self) -> None:
        for r in self.readers:
            r.close()
        for ring in self.rings:
            ring.close()
