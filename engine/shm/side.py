"""What the producer and the consumer of a ring share: role claim, liveness, the wait loop.

``_Side`` is the base of ``RingWriter`` and ``RingReader``: it takes the role in
the segment header (refusing a second live holder), watches the peer's pid,
and waits (spin, then ``sched_yield``, then a futex park with a timeout) with
the parking handshake ``engine.shm.ring`` describes. ``deadline`` turns a
timeout in seconds into a monotonic-ns deadline for the blocking calls.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable
from typing import Protocol

import engine.shm.atomics as atomics
import engine.shm.futex as futex
import engine.shm.layout as layout
from engine.errors import PeerDiedError, RingClosedError, RingRoleError
from engine.shm.peer import PeerWatch
from engine.shm.segment import Segment
from engine.shm.wait import WaitStrategy

_U32 = 0xFFFFFFFF


class RingLike(Protocol):
    """What a side needs of its ring (``engine.shm.ring.Ring``)."""

    segment: Segment
    name: str
    capacity: int


class _Side:
    """What the producer and the consumer share: role claim, liveness, the wait loop."""

    _role = ""
    _peer_role = ""
    _Q_MY_PID = _Q_PEER_PID = _Q_MY_HEARTBEAT = 0
    _I_MY_WAITING = _I_MY_CLOSED = _I_PEER_CLOSED = 0
    _I_MY_WAKE = _I_PEER_WAKE = 0  # the word I park on / the word I bump to wake the peer
    _I_PEER_WAITING = 0

    def __init__(self, ring: RingLike, wait: WaitStrategy) -> None:
        seg = ring.segment
        self.ring = ring
        header = seg.buf[: layout.HEADER_SIZE]
        self._q = atomics.u64_cells(header)  # own views: Ring.close() must not break this side
        self._i = atomics.u32_cells(header)
        self._data = seg.data()
        self._cap = ring.capacity
        self._mask = ring.capacity - 1
        self._wait_strategy = wait
        self._peer = PeerWatch()
        self._my_wake_addr = seg.address(self._I_MY_WAKE * 4)
        self._peer_wake_addr = seg.address(self._I_PEER_WAKE * 4)
        self._closed = False
        # Called after waking a peer that announced a wait: a peer that sleeps in a select
        # over several rings (the push source) gets its doorbell rung here.
        self.wake_hook: Callable[[], None] | None = None
        me = os.getpid()
        key = (ring.name, self._role)
        other = _open_sides.get(key)
        if other is not None and not other._closed:
            raise RingRoleError(
                f"ring {ring.name} already has an open {self._role} in this process; "
                "close it first (two sides of one role would corrupt the ring)"
            )
        holder = int(self._q[self._Q_MY_PID])
        if holder not in (0, me) and not self._i[self._I_MY_CLOSED]:
            watch = PeerWatch()
            try:
                if watch.alive(holder):
                    raise RingRoleError(
                        f"ring {ring.name} already has a live {self._role} (pid {holder})"
                    )
            finally:
                watch.close()
        # Take the role: pid first (so a waiting peer never pairs "not closed" with a dead
        # predecessor's pid), then heartbeat, then clear a predecessor's waiting flag, then open.
        self._q[self._Q_MY_PID] = me
        self._q[self._Q_MY_HEARTBEAT] = time.monotonic_ns()
        self._i[self._I_MY_WAITING] = 0
        self._i[self._I_MY_CLOSED] = 0
        _open_sides[key] = self
        self._peer.alive(int(self._q[self._Q_PEER_PID]))  # open the pidfd while the peer lives

    # -- waking the peer -------------------------------------------------------
    def _signal_peer(self) -> None:
        """After storing my position: wake the peer if it parked (fence first)."""
        atomics.full_fence()
        if self._i[self._I_PEER_WAITING]:
            i = self._i
            i[self._I_PEER_WAKE] = (i[self._I_PEER_WAKE] + 1) & _U32
            futex.wake(self._peer_wake_addr)
            if self.wake_hook is not None:
                self.wake_hook()

    # -- waiting elsewhere -------------------------------------------------------
    def announce_wait(self) -> None:
        """Set my waiting flag (fenced), for a wait that is not on this ring's wake word.

        A side that sleeps in a ``select`` over several rings' doorbell calls this on
        each ring, then re-checks each ring, then sleeps; the peer that publishes next
        sees the flag and rings (its ``wake_hook``). The same handshake as a park: one
        of the two always sees the other's store. ``end_wait()`` after the sleep.
        """
        self._i[self._I_MY_WAITING] = 1
        atomics.full_fence()

    def end_wait(self) -> None:
        self._i[self._I_MY_WAITING] = 0

    # -- waiting -------------------------------------------------------------
    def _wait(self, ready: Callable[[], bool], deadline_ns: int | None) -> bool:
        """Wait until ``ready()``; False once ``deadline_ns`` (monotonic) passes."""
        if ready():
            return True
        ws = self._wait_strategy
        now = time.monotonic_ns()
        spin_end = now + ws.spin_ns
        yield_end = spin_end + ws.yield_ns
        liveness_ns = int(ws.liveness_ms * 1e6)
        next_check = now + liveness_ns
        park_ns = int(ws.park_timeout_ms * 1e6)
        i = self._i
        while True:
            if self._closed:
                raise RingClosedError(f"the {self._role} side of ring {self.ring.name} is closed")
            if i[self._I_PEER_CLOSED] or now >= next_check:
                self._check_peer(ready)
                next_check = now + liveness_ns
            if deadline_ns is not None and now >= deadline_ns:
                return False
            if now < spin_end:
                pass
            elif now < yield_end:
                os.sched_yield()
            else:
                timeout = park_ns
                if deadline_ns is not None:
                    timeout = max(0, min(timeout, deadline_ns - now))
                self._park(ready, timeout)
            if ready():
                return True
            now = time.monotonic_ns()

    def _park(self, ready: Callable[[], bool], timeout_ns: int) -> None:
        i = self._i
        seq = i[self._I_MY_WAKE]
        i[self._I_MY_WAITING] = 1
        atomics.full_fence()
        try:
            # A close() bumps the wake word too; if it landed before we read seq, see it here.
            if not ready() and not i[self._I_PEER_CLOSED]:
                futex.wait(self._my_wake_addr, seq, timeout_ns / 1e9)
        finally:
            i[self._I_MY_WAITING] = 0

    def _check_peer(self, ready: Callable[[], bool]) -> None:
        """Raise if the peer is gone and ``ready()`` still fails; update my heartbeat."""
        self._q[self._Q_MY_HEARTBEAT] = time.monotonic_ns()
        if self._i[self._I_PEER_CLOSED]:
            if not ready():  # re-check: the peer stores its last position before closing
                self._peer_closed()
            return
        pid = int(self._q[self._Q_PEER_PID])
        if not self._peer.alive(pid) and not ready():
            raise PeerDiedError(
                f"ring {self.ring.name}: the {self._peer_role} (pid {pid}) died without "
                f"closing the ring; this {self._role} (pid {os.getpid()}) cannot make progress"
            )

    def _peer_closed(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Detach from the ring (the peer sees it); the ring itself stays mapped. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._peer.close()
        if _open_sides.get((self.ring.name, self._role)) is self:
            del _open_sides[(self.ring.name, self._role)]
        self._i[self._I_MY_CLOSED] = 1
        atomics.full_fence()
        i = self._i
        i[self._I_PEER_WAKE] = (i[self._I_PEER_WAKE] + 1) & _U32
        futex.wake(self._peer_wake_addr)
        if self.wake_hook is not None:
            self.wake_hook()

    @property
    def closed(self) -> bool:
        return self._closed


# The open sides of this process, by (ring name, role): a second one would corrupt the ring.
_open_sides: weakref.WeakValueDictionary[tuple[str, str], _Side] = weakref.WeakValueDictionary()


def deadline(timeout: float | None) -> int | None:
    """Monotonic-ns deadline for a timeout in seconds (None = wait forever)."""
    return None if timeout is None else time.monotonic_ns() + int(timeout * 1e9)
