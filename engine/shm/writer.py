"""The producer side of a ring: claim space, write in place, commit.

Call order::

    w = ring.writer()
    c = w.try_claim(n) or w.claim(n)    # a span of n payload bytes (None: ring full)
    c.buf[...] = ...                    # write the payload in place
    w.commit(c)  /  w.abort(c)          # publish it (optionally shorter) / give it back
    w.offer(kind, payload) -> bool      # copy-in convenience; put() waits instead
    w.write_schema(schema); w.write_batch(batch)   # Arrow, serialised in place
    w.write_watermark(t); w.write_barrier(n); w.write_eos()
    w.close()

At most one claim is outstanding. Non-blocking calls (``try_claim``,
``offer``, ``offer_batch``) return None/False on a full ring; blocking calls
(``claim``, ``put``, ``write_batch``) wait with the ring's wait strategy and
return None/False only when their ``timeout`` expires. Blocking calls raise
:class:`PeerDiedError` if the consumer dies and :class:`PeerClosedError` if it
closes while the ring is too full to continue. A frame that can never fit
raises :class:`FrameTooLargeError` naming both sizes.
"""

from __future__ import annotations

import struct
import time

import pyarrow as pa

import engine.shm.layout as layout
from engine.errors import FrameTooLargeError, PeerClosedError, RingClosedError, RingError
from engine.shm.arrow_codec import BatchEncoder
from engine.shm.layout import FRAME_HEADER, FRAME_HEADER_SIZE, MAX_KIND, PAD_HEADER, FrameKind
from engine.shm.side import RingLike, _Side, deadline
from engine.shm.wait import WaitStrategy

_DATA = int(FrameKind.DATA)
_PAD = int(FrameKind.PAD)
_Q_HEAD = layout.Q_HEAD
_Q_TAIL = layout.Q_TAIL
_pack_header = FRAME_HEADER.pack_into
_MAX = int(MAX_KIND)
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def _bad_header(kind: int, flags: int, value: int) -> str:
    return (
        f"cannot write frame kind={kind} flags={flags} value={value}: kind must be one of "
        f"SCHEMA..EOS (1..{_MAX}), flags a u16, value a signed 64-bit integer"
    )


def _as_bytes(payload: object) -> memoryview:
    """A flat unsigned-byte view of any buffer (pa.Buffer exports signed bytes)."""
    return memoryview(payload).cast("B")  # type: ignore[arg-type]


def split_to_fit(batch: pa.RecordBatch, limit: int) -> list[pa.RecordBatch]:
    """Zero-copy row slices of ``batch`` whose frames are at most ``limit`` bytes each.

    The one place a batch is cut to fit a ring: a wide batch (long strings, a
    window closing many groups) is split, never refused. An empty batch gives
    ``[]``; a single row larger than ``limit`` stays whole (writing it raises
    ``FrameTooLargeError`` if it cannot fit the ring at all).
    """
    if not batch.num_rows:
        return []
    size = BatchEncoder.size_bound(batch)
    if size <= limit or batch.num_rows == 1:
        return [batch]
    parts = -(-size // max(1, limit // 2))
    step = max(1, -(-batch.num_rows // parts))
    out: list[pa.RecordBatch] = []
    for off in range(0, batch.num_rows, step):
        out.extend(split_to_fit(batch.slice(off, step), limit))
    return out


class Claim:
    """A span of the ring reserved for one frame; ``buf`` is its payload."""

    __slots__ = ("position", "index", "length", "kind", "flags", "value", "buf")

    def __init__(
        self,
        position: int,
        index: int,
        length: int,
        kind: int,
        flags: int,
        value: int,
        buf: memoryview,
    ) -> None:
        self.position = position
        self.index = index
        self.length = length
        self.kind = kind
        self.flags = flags
        self.value = value
        self.buf = buf


class RingWriter(_Side):
    """Producer side. Not thread-safe: one thread of one process writes."""

    _role, _peer_role = "producer", "consumer"
    _Q_MY_PID, _Q_PEER_PID = layout.Q_PRODUCER_PID, layout.Q_CONSUMER_PID
    _Q_MY_HEARTBEAT = layout.Q_PRODUCER_HEARTBEAT
    _I_MY_WAITING, _I_PEER_WAITING = layout.I_PRODUCER_WAITING, layout.I_CONSUMER_WAITING
    _I_MY_CLOSED, _I_PEER_CLOSED = layout.I_PRODUCER_CLOSED, layout.I_CONSUMER_CLOSED
    _I_MY_WAKE, _I_PEER_WAKE = layout.I_SPACE_SEQ, layout.I_DATA_SEQ

    def __init__(self, ring: RingLike, wait: WaitStrategy) -> None:
        super().__init__(ring, wait)
        self._head = int(self._q[layout.Q_HEAD])
        self._tail = int(self._q[layout.Q_TAIL])
        self._claim: Claim | None = None
        self._encoder: BatchEncoder | None = None
        self.blocked_ns = 0  # time spent waiting for space (backpressure), for metrics

    @property
    def max_payload(self) -> int:
        """The largest payload a single frame can carry in this ring."""
        return min(self._cap - FRAME_HEADER_SIZE, layout.MAX_PAYLOAD)

    # -- claim / commit ----------------------------------------------------------
    def _free_for(self, head: int, size: int) -> bool:
        if head + size - self._tail <= self._cap:
            return True
        self._tail = int(self._q[layout.Q_TAIL])
        return head + size - self._tail <= self._cap

    def try_claim(
        self, length: int, kind: int = _DATA, flags: int = 0, value: int = 0
    ) -> Claim | None:
        """Reserve a frame with ``length`` payload bytes; None if the ring is full now."""
        if self._claim is not None:
            raise RingError("a claim is already outstanding: commit or abort it first")
        if self._closed:
            raise RingClosedError(f"the producer side of ring {self.ring.name} is closed")
        if not (0 < kind <= _MAX and 0 <= flags <= 0xFFFF and _I64_MIN <= value <= _I64_MAX):
            raise RingError(_bad_header(kind, flags, value))
        size = (FRAME_HEADER_SIZE + length + 7) & ~7
        cap = self._cap
        if size > cap or not 0 <= length <= layout.MAX_PAYLOAD:
            raise FrameTooLargeError(
                f"a frame of {size} bytes (payload {length} bytes) can never fit in ring "
                f"{self.ring.name} of capacity {cap} bytes (payload limit "
                f"{self.max_payload} bytes)"
            )
        head = self._head
        index = head & self._mask
        if index + size > cap:  # never wrap: pad to the end, start again at index 0
            pad = cap - index
            if not self._free_for(head, pad):
                return None
            PAD_HEADER.pack_into(self._data, index, 0, _PAD, 0)
            head += pad
            self._head = head
            self._q[layout.Q_HEAD] = head
            self._signal_peer()
            index = 0
        if not self._free_for(head, size):
            return None
        start = index + FRAME_HEADER_SIZE
        claim = Claim(head, index, length, kind, flags, value, self._data[start : start + length])
        self._claim = claim
        return claim

    def claim(
        self,
        length: int,
        kind: int = _DATA,
        flags: int = 0,
        value: int = 0,
        timeout: float | None = None,
    ) -> Claim | None:
        """Like :meth:`try_claim` but waits for space; None only if ``timeout`` expires."""
        c = self.try_claim(length, kind, flags, value)
        if c is not None:
            return c
        size = layout.frame_size(length)
        cap, mask = self._cap, self._mask

        def fits() -> bool:
            # Room for the frame, or, if it must wrap, for the PAD that try_claim writes first.
            head = self._head
            index = head & mask
            return self._free_for(head, size if index + size <= cap else cap - index)

        end = deadline(timeout)
        while True:
            started = time.monotonic_ns()
            ok = self._wait(fits, end)
            self.blocked_ns += time.monotonic_ns() - started
            if not ok:
                return self.try_claim(length, kind, flags, value)
            c = self.try_claim(length, kind, flags, value)
            if c is not None:
                return c

    def commit(self, claim: Claim, length: int | None = None) -> None:
        """Publish the claimed frame, ``length`` bytes of payload (default: all)."""
        if claim is not self._claim:
            raise RingError("commit of a claim that is not the outstanding one")
        if length is None:
            length = claim.length
        elif not 0 <= length <= claim.length:
            raise RingError(f"commit length={length} outside the claimed 0..{claim.length}")
        claim.buf.release()
        self._claim = None
        FRAME_HEADER.pack_into(
            self._data, claim.index, length, claim.kind, claim.flags, claim.value
        )
        head = claim.position + ((FRAME_HEADER_SIZE + length + 7) & ~7)
        self._head = head
        self._q[layout.Q_HEAD] = head
        self._signal_peer()

    def abort(self, claim: Claim) -> None:
        """Give the claimed span back unpublished."""
        if claim is self._claim:
            claim.buf.release()
            self._claim = None

    # -- copy-in conveniences ------------------------------------------------------
    def offer(
        self,
        kind: int,
        payload: bytes | bytearray | memoryview = b"",
        value: int = 0,
        flags: int = 0,
    ) -> bool:
        """Write one frame if it fits now; False (nothing written) if the ring is full."""
        if type(payload) is not bytes:
            payload = _as_bytes(payload)  # count bytes, not items
        # Fast path (no Claim object): the frame fits before the end of the data area.
        n = len(payload)
        size = (FRAME_HEADER_SIZE + 7 + n) & ~7
        head = self._head
        index = head & self._mask
        cap = self._cap
        fast = index + size <= cap and n <= layout.MAX_PAYLOAD
        if fast and self._claim is None and not self._closed and 0 < kind <= _MAX:
            if head + size - self._tail > cap:
                self._tail = self._q[_Q_TAIL]
                if head + size - self._tail > cap:
                    return False
            data = self._data
            try:
                _pack_header(data, index, n, kind, flags, value)
            except struct.error:
                raise RingError(_bad_header(kind, flags, value)) from None
            start = index + FRAME_HEADER_SIZE
            data[start : start + n] = payload
            head += size
            self._head = head
            self._q[_Q_HEAD] = head
            self._signal_peer()
            return True
        c = self.try_claim(n, kind, flags, value)
        if c is None:
            return False
        c.buf[:] = payload
        self.commit(c)
        return True

    def put(
        self,
        kind: int,
        payload: bytes | bytearray | memoryview = b"",
        value: int = 0,
        flags: int = 0,
        timeout: float | None = None,
    ) -> bool:
        """Write one frame, waiting for space; False only if ``timeout`` expires."""
        if type(payload) is not bytes:
            payload = _as_bytes(payload)
        if self.offer(kind, payload, value, flags):
            return True
        c = self.claim(len(payload), kind, flags, value, timeout)
        if c is None:
            return False
        c.buf[:] = payload
        self.commit(c)
        return True

    def write_watermark(self, event_time: int, timeout: float | None = None) -> bool:
        return self.put(FrameKind.WATERMARK, b"", event_time, timeout=timeout)

    def write_barrier(self, epoch: int, timeout: float | None = None) -> bool:
        return self.put(FrameKind.BARRIER, b"", epoch, timeout=timeout)

    def write_eos(self, timeout: float | None = None) -> bool:
        return self.put(FrameKind.EOS, b"", 0, timeout=timeout)

    # -- Arrow ---------------------------------------------------------------------
    def write_schema(self, schema: pa.Schema, timeout: float | None = None) -> bool:
        """Send ``schema`` as a SCHEMA frame; later batches must match it."""
        encoder = BatchEncoder(schema)
        if not self.put(FrameKind.SCHEMA, encoder.schema_message, timeout=timeout):
            return False
        self._encoder = encoder
        return True

    def write_batch(self, batch: pa.RecordBatch, timeout: float | None = None) -> bool:
        """Serialise ``batch`` straight into the ring (sends its schema first if none was)."""
        encoder = self._encoder
        size = BatchEncoder.size_bound(batch)
        self._check_batch_fits(batch, size)
        end = deadline(timeout)
        if encoder is None:
            if not self.write_schema(batch.schema, timeout):
                return False
            encoder = self._encoder
            assert encoder is not None
        else:
            encoder.check(batch)
        while True:
            self._check_batch_fits(batch, size)
            remaining = None if end is None else max(0.0, (end - time.monotonic_ns()) / 1e9)
            c = self.claim(size, FrameKind.DATA, timeout=remaining)
            if c is None:
                return False
            written = encoder.encode_into(batch, c.buf)
            if written is not None:
                self.commit(c, written)
                return True
            self.abort(c)  # the bound was wrong: measure exactly and try again
            size = encoder.exact_size(batch) + 8

    def _check_batch_fits(self, batch: pa.RecordBatch, size: int) -> None:
        if size > self.max_payload:
            raise FrameTooLargeError(
                f"a batch of {batch.num_rows} rows needs a frame of {size} bytes; ring "
                f"{self.ring.name} has capacity {self._cap} bytes (split the batch or "
                "give the ring more capacity)"
            )

    @property
    def frame_limit(self) -> int:
        """The largest frame ``write_batches`` writes: half the payload a frame may have.

        Half, so that the producer can write the next frame while the consumer
        still reads the last one; also the one size every batch is cut to.
        """
        return self.max_payload // 2

    def write_batches(self, batch: pa.RecordBatch) -> int:
        """Write ``batch`` as one or more frames that fit (``split_to_fit``); rows written.

        Waits for space like ``write_batch``. An empty batch writes nothing.
        """
        for piece in split_to_fit(batch, self.frame_limit):
            self.write_batch(piece)
        return batch.num_rows

    def offer_batch(self, batch: pa.RecordBatch) -> bool:
        """:meth:`write_batch` without waiting: False if the ring has no room now."""
        return self.write_batch(batch, timeout=0)

    def close(self) -> None:
        if self._claim is not None:
            self.abort(self._claim)
        super().close()

    def _peer_closed(self) -> None:
        raise PeerClosedError(
            f"ring {self.ring.name}: the consumer closed the ring; "
            f"{self._head - self._tail} bytes are still unread"
        )

    def __enter__(self) -> RingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
