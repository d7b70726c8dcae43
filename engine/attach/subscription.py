"""A subscription: the batches a running subscribe sink writes (``connect(dir).subscribe``)."""

from __future__ import annotations

import socket
from pathlib import Path

import pyarrow as pa

from engine.attach.session import Session
from engine.errors import PeerClosedError, PeerDiedError
from engine.shm import FrameKind, Ring
from engine.shm.arrow_codec import copy_out
from engine.shm.reader import RingReader

_EOS, _DATA = int(FrameKind.EOS), int(FrameKind.DATA)


class Subscription(Session):
    """The batches a subscribe sink writes after this subscriber attached, in order.

    Each batch is a copy (safe to keep). Iteration ends quietly at the engine's end of
    stream; it raises :class:`PeerDiedError` if the engine's sink process dies,
    :class:`PeerClosedError` if the engine detached this subscriber (the reason is in
    the message) and ``TimeoutError`` if no batch came within ``timeout``. After it
    ends, ``dropped_batches``/``dropped_rows`` hold what the engine dropped for this
    subscriber (policy ``drop``), as the engine reported it.
    """

    _kind = "sink"

    def __init__(
        self,
        name: str,
        directory: Path,
        sock: socket.socket,
        ring: Ring,
        reader: RingReader,
        schema: pa.Schema,
        timeout: float | None,
    ) -> None:
        super().__init__(name, directory, sock, ring)
        self._reader = reader
        self.schema = schema
        self.timeout = timeout
        self.rows_received = 0
        self.dropped_batches = 0
        self.dropped_rows = 0

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> pa.RecordBatch:
        if self.closed:
            raise StopIteration
        reader = self._reader
        while True:
            try:
                frame = reader.read(self.timeout)
            except PeerDiedError as exc:
                self._finish()
                raise PeerDiedError(
                    f"subscription to {self._where()}: the engine's sink process died; "
                    f"no more batches will come ({exc})"
                ) from exc
            except PeerClosedError as exc:
                reason = self._reason(1.0)
                self._finish()
                raise PeerClosedError(
                    f"subscription to {self._where()}: the engine detached this subscriber: "
                    f"{reason}"
                ) from exc
            if frame is None:
                raise TimeoutError(
                    f"subscription to {self._where()}: no batch within {self.timeout} s"
                )
            if frame.kind == _EOS:
                reader.release(frame)
                self._engine_word(1.0)
                self._finish()
                raise StopIteration
            if frame.kind == _DATA:
                view = reader.batch(frame)
                batch = copy_out(view)  # a copy: the ring's bytes are reused
                del view
                reader.release(frame)
                self.rows_received += batch.num_rows
                return batch
            reader.release(frame)

    def _finish(self) -> None:
        word = self._end or {}
        self.dropped_batches = int(word.get("dropped_batches", 0))
        self.dropped_rows = int(word.get("dropped_rows", 0))
        self.close()

    def close(self) -> None:
        """Detach (the engine stops writing to this subscriber). Idempotent."""
        if self.closed:
            return
        self._reader.close()
        self._close_attachment()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
