"""The consumer side of a ring: read frames in place, release when done.

Call order::

    r = ring.reader()
    f = r.poll()                  # next frame or None (never waits)
    f = r.read(timeout=None)      # next frame, waiting for one (None: timeout)
    f.kind, f.value, f.payload    # payload is a memoryview into the segment
    b = r.batch(f)                # DATA frame -> zero-copy RecordBatch
    r.release(f)                  # give back the space of f and every frame before it
    for b in r.batches(): ...     # batches until EOS, each released on the next step
    r.close()

PAD frames are skipped and never returned. A SCHEMA frame is returned *and*
remembered: ``r.schema`` is the stream's schema from then on.

``batch(frame)`` decodes with the schema of the latest SCHEMA frame polled, so
decode a DATA frame before polling past a newer SCHEMA.

Back-pressure: a writer waiting for room is woken once the ring is at most half
full (or after its park timeout), so a full ring costs one wake-up per half
ring, not one per frame.

Non-guarantees: a frame's payload, and every batch decoded from it, is valid
only until that frame is released; after that the producer may overwrite the
bytes (copy what you keep). Holding unreleased frames for more than the ring's
capacity stalls the producer. ``read`` raises :class:`PeerDiedError` if the
producer dies, :class:`PeerClosedError` if it closes without EOS and nothing
is left to read, and :class:`CorruptFrameError` on an impossible header.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

import engine.shm.arrow_codec as arrow_codec
import engine.shm.layout as layout
from engine.errors import CorruptFrameError, PeerClosedError, RingClosedError, RingError
from engine.shm.layout import FRAME_HEADER, FRAME_HEADER_SIZE, MAX_KIND, FrameKind
from engine.shm.side import RingLike, _Side, deadline
from engine.shm.wait import WaitStrategy

_PAD = int(FrameKind.PAD)
_SCHEMA = int(FrameKind.SCHEMA)
_DATA = int(FrameKind.DATA)
_EOS = int(FrameKind.EOS)
_Q_HEAD = layout.Q_HEAD
_unpack_header = FRAME_HEADER.unpack_from


class Frame:
    """One frame read from the ring: header fields and a zero-copy payload."""

    __slots__ = ("kind", "flags", "value", "payload", "position", "end")

    def __init__(
        self, kind: int, flags: int, value: int, payload: memoryview, position: int, end: int
    ) -> None:
        self.kind = kind
        self.flags = flags
        self.value = value
        self.payload = payload
        self.position = position
        self.end = end

    def __repr__(self) -> str:
        kind = FrameKind(self.kind).name
        return f"Frame({kind}, value={self.value}, {len(self.payload)} bytes @ {self.position})"


class RingReader(_Side):
    """Consumer side. Not thread-safe: one thread of one process reads."""

    # The role table: the writer's is its mirror image (same names, the other offsets).
    _role, _peer_role = "consumer", "producer"
    _Q_MY_PID, _Q_PEER_PID = layout.Q_CONSUMER_PID, layout.Q_PRODUCER_PID
    _Q_MY_HEARTBEAT = layout.Q_CONSUMER_HEARTBEAT
    _I_MY_WAITING, _I_PEER_WAITING = layout.I_CONSUMER_WAITING, layout.I_PRODUCER_WAITING
    _I_MY_CLOSED, _I_PEER_CLOSED = layout.I_CONSUMER_CLOSED, layout.I_PRODUCER_CLOSED
    _I_MY_WAKE, _I_PEER_WAKE = layout.I_DATA_SEQ, layout.I_SPACE_SEQ

    def __init__(self, ring: RingLike, wait: WaitStrategy) -> None:
        super().__init__(ring, wait)
        self._pos = self._released = int(self._q[layout.Q_TAIL])
        self._head = int(self._q[layout.Q_HEAD])
        self.schema: pa.Schema | None = None
        self._pad_start = self._pad_end = -1  # a skipped PAD not yet released
        self.eos = False  # an EOS frame was read: the stream is complete

    def _available(self) -> bool:
        if self._pos < self._head:
            return True
        self._head = self._q[_Q_HEAD]
        return self._pos < self._head

    def poll(self) -> Frame | None:
        """The next frame, or None if none is published yet. Never waits."""
        if self._closed:
            raise RingClosedError(f"the consumer side of ring {self.ring.name} is closed")
        while True:
            pos = self._pos
            if pos >= self._head:
                self._head = self._q[_Q_HEAD]
                if pos >= self._head:
                    return None
            index = pos & self._mask
            length, kind, flags, value = _unpack_header(self._data, index)
            if kind == _PAD:
                end = pos + self._cap - index
                self._pos = end
                if self._released == pos:  # nothing held before the pad: give it back now
                    self._store_tail(end)
                else:  # released together with the frame just before it
                    self._pad_start, self._pad_end = pos, end
                continue
            start = index + FRAME_HEADER_SIZE
            end = pos + ((FRAME_HEADER_SIZE + 7 + length) & ~7)
            if kind > MAX_KIND or end > self._head or start + length > self._cap:
                raise CorruptFrameError(
                    f"ring {self.ring.name}: impossible frame at position {pos} "
                    f"(kind={kind}, length={length}, head={self._head}, capacity={self._cap})"
                )
            self._pos = end
            payload = self._data[start : start + length]
            if kind == _SCHEMA:
                self.schema = arrow_codec.decode_schema(payload)
            elif kind == _EOS:
                self.eos = True
            return Frame(kind, flags, value, payload, pos, end)

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame, waiting for one; None only if ``timeout`` expires."""
        end = deadline(timeout)
        while True:
            f = self.poll()
            if f is not None:
                return f
            # What became available may have been only a PAD: poll again, wait again.
            if not self._wait(self._available, end):
                return None

    def release(self, frame: Frame | None = None) -> None:
        """Give back ``frame`` and every frame read before it (default: all read so far)."""
        end = self._pos if frame is None else frame.end
        if end == self._pad_start:  # a PAD already skipped follows this frame: give it back too
            end = self._pad_end
        if end > self._released:
            self._store_tail(end)

    def _store_tail(self, end: int) -> None:
        self._released = end
        self._q[layout.Q_TAIL] = end
        # A writer parks only when its frame does not fit. It is woken once at most half the
        # ring is in use, not at every release: under backpressure it then writes many
        # frames per wake-up instead of one (a futex wake on another CPU costs tens of µs).
        # A reader that stops releasing above half lets it sleep until its park timeout.
        if self._q[_Q_HEAD] - end <= self._cap >> 1:
            self._signal_peer()

    def batch(self, frame: Frame) -> pa.RecordBatch:
        """Decode a DATA frame into a RecordBatch that points into the ring (no copy)."""
        if frame.kind != _DATA:
            raise RingError(f"batch() needs a DATA frame, got {FrameKind(frame.kind).name}")
        if self.schema is None:
            raise CorruptFrameError(
                f"ring {self.ring.name}: DATA frame at position {frame.position} before any SCHEMA"
            )
        return arrow_codec.decode_batch(frame.payload, self.schema)

    def batches(self, timeout: float | None = None) -> Iterator[pa.RecordBatch]:
        """Yield the stream's batches until EOS; each is released when the next is asked for.

        Other frames (SCHEMA, WATERMARK, BARRIER) are consumed silently. Raises
        :class:`RingError` subclasses as :meth:`read` does; a ``timeout`` that expires
        between two frames ends the iteration with :class:`TimeoutError`.
        """
        while True:
            f = self.read(timeout)
            if f is None:
                raise TimeoutError(f"ring {self.ring.name}: no frame within {timeout} s")
            if f.kind == _EOS:
                self.release(f)
                return
            if f.kind == _DATA:
                b = self.batch(f)
                yield b
                del b
            self.release(f)

    def _peer_closed(self) -> None:
        if self.eos:
            raise PeerClosedError(
                f"ring {self.ring.name}: reading past the end of the stream (EOS was already "
                "read and the producer has closed)"
            )
        raise PeerClosedError(
            f"ring {self.ring.name}: the producer closed the ring without end of stream"
        )

    def __enter__(self) -> RingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
