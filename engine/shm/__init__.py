"""Shared-memory SPSC rings that carry Arrow record batches between processes.

The public surface::

    from engine.shm import Ring, FrameKind, WaitStrategy

Modules: ``layout`` (byte offsets, frame format), ``atomics`` (the only place
that touches shared counters), ``futex`` (parking), ``segment`` (create /
attach / unlink), ``ring`` (roles, wait loop), ``writer`` / ``reader`` (the two
sides), ``arrow_codec`` (Arrow IPC in place), ``wait`` (idle strategies).
"""

from engine.shm.layout import FrameKind
from engine.shm.reader import Frame, RingReader
from engine.shm.ring import Ring
from engine.shm.segment import sweep_stale
from engine.shm.wait import BUSY, DEFAULT, PARK, WaitStrategy
from engine.shm.writer import Claim, RingWriter

__all__ = [
    "BUSY",
    "DEFAULT",
    "PARK",
    "Claim",
    "Frame",
    "FrameKind",
    "Ring",
    "RingReader",
    "RingWriter",
    "WaitStrategy",
    "sweep_stale",
]
