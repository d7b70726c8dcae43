"""A single-producer / single-consumer byte ring in one shared-memory segment.

Roles and call order::

    ring = Ring.create(capacity)        # owner (coordinator): creates, later unlinks
    ring = Ring.attach(name)            # any process: maps an existing ring
    w = ring.writer()                   # at most one live producer per ring
    r = ring.reader()                   # at most one live consumer per ring
    ...                                 # see RingWriter / RingReader
    w.close(); r.close(); ring.close()  # the owner's close unlinks the segment

Invariants:

* ``tail <= head <= tail + capacity`` at all times; only the producer stores
  ``head`` and only the consumer stores ``tail``.
* Bytes in ``[tail, head)`` are published frames; the producer writes only in
  ``[head, tail + capacity)``, and stores ``head`` after the frame's bytes
  (x86-64 TSO keeps that order, see ``atomics``), so a reader never sees a
  frame part-way through writing.
* A frame never wraps: the producer pads to the end of the data area first.
* Nothing is ever dropped: a full ring makes ``offer``/``try_claim`` return
  False/None and ``put``/``claim``/``write_batch`` wait.

The two sides share their role claim, liveness checks and wait loop
(``engine.shm.side``). Parking handshake (lost wake-ups are impossible, not just unlikely): the
waiting side reads the wake word, stores its *waiting* flag, fences, re-checks
its condition and only then sleeps on the wake word (the kernel re-compares
it). The other side stores its position, fences, and if the flag is set bumps
the wake word and wakes. With both fences, one of the two always sees the
other's store. A bounded park timeout also bounds the cost of any bug here.

Not guaranteed: two processes attaching as producer at the same instant are
not arbitrated (the coordinator assigns roles; within one process a second
open side of a role is refused); frames a dead producer had claimed but not
committed are simply never published. A consumer that replaces a dead one
starts at the oldest unreleased frame, which may be past the stream's SCHEMA
frame, so Arrow decoding needs a fresh ring: the engine recreates rings when it
recovers from a crash instead of re-attaching (docs/architecture.md). Non-blocking
calls (``offer``, ``poll``) do not look at the peer; blocking ones do.
"""

from __future__ import annotations

import engine.shm.layout as layout
from engine.shm.reader import RingReader
from engine.shm.segment import Segment
from engine.shm.wait import DEFAULT, WaitStrategy
from engine.shm.writer import RingWriter


class Ring:
    """A mapped ring segment; hands out its writer and reader sides."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.name = segment.name
        self.capacity = segment.capacity

    @classmethod
    def create(cls, capacity: int, name: str | None = None) -> Ring:
        """Create a new ring of ``capacity`` bytes (a power of two); the caller owns it."""
        return cls(Segment.create(capacity, name))

    @classmethod
    def attach(cls, name: str, capacity: int | None = None) -> Ring:
        """Map the existing ring ``name``; raises RingFormatError if it is not one."""
        return cls(Segment.attach(name, capacity))

    def writer(self, wait: WaitStrategy = DEFAULT) -> RingWriter:
        return RingWriter(self, wait)

    def reader(self, wait: WaitStrategy = DEFAULT) -> RingReader:
        return RingReader(self, wait)

    def stats(self) -> dict[str, int]:
        """A snapshot of the header: positions, occupancy, pids, heartbeats."""
        q, i = self.segment.q, self.segment.i
        head, tail = int(q[layout.Q_HEAD]), int(q[layout.Q_TAIL])
        return {
            "capacity": self.capacity,
            "head": head,
            "tail": tail,
            "occupancy": head - tail,
            "owner_pid": int(q[layout.Q_OWNER_PID]),
            "producer_pid": int(q[layout.Q_PRODUCER_PID]),
            "consumer_pid": int(q[layout.Q_CONSUMER_PID]),
            "producer_closed": int(i[layout.I_PRODUCER_CLOSED]),
            "consumer_closed": int(i[layout.I_CONSUMER_CLOSED]),
            "producer_heartbeat_ns": int(q[layout.Q_PRODUCER_HEARTBEAT]),
            "consumer_heartbeat_ns": int(q[layout.Q_CONSUMER_HEARTBEAT]),
        }

    def close(self) -> None:
        """Unmap; if this process created the ring, also unlink it."""
        self.segment.close()

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
