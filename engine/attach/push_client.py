"""The push client: one producer of a running engine's push source (``connect(dir).source``)."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine.attach.session import Session
from engine.errors import ConnectorError, PeerDiedError, PeerGoneError, SchemaMismatchError
from engine.shm import Ring
from engine.shm.peer import PeerWatch
from engine.shm.writer import RingWriter, split_to_fit


class PushClient(Session):
    """One producer of a push source. Not thread-safe: one thread pushes.

    ``push_arrow`` matches columns by name and casts them (safely) to the source's
    ``schema``; a batch larger than a quarter of the ring is sent in slices. A full ring
    blocks the push (backpressure) up to ``timeout`` (None: as long as the engine lives).
    """

    _kind = "source"

    def __init__(
        self,
        name: str,
        directory: Path,
        sock: socket.socket,
        ring: Ring,
        writer: RingWriter,
        schema: pa.Schema,
        doorbell: int | None = None,
    ) -> None:
        super().__init__(name, directory, sock, ring)
        self._writer = writer
        self._doorbell = doorbell  # the source's pipe: one byte wakes it (protocol, step 2)
        if doorbell is not None:
            writer.wake_hook = self._ring_doorbell
        self.schema = schema
        self.rows_pushed = 0
        self._limit = max(1024, ring.capacity // 4)

    def push_arrow(self, data: pa.RecordBatch | pa.Table, timeout: float | None = None) -> int:
        """Push a RecordBatch or Table; returns its row count. See the class docstring."""
        self._check_engine()
        batches = data.to_batches() if isinstance(data, pa.Table) else [data]
        pieces = [p for b in batches for p in split_to_fit(self._conform(b), self._limit)]
        rows = 0
        for piece in pieces:
            if not piece.num_rows:
                continue
            try:
                ok = self._writer.write_batch(piece, timeout=timeout)
            except PeerDiedError as exc:
                raise PeerDiedError(
                    f"push to {self._where()}: the engine's source process died ({exc}); "
                    "rows pushed since its last committed epoch are lost"
                ) from exc
            except PeerGoneError as exc:
                raise ConnectorError(
                    f"{self._where()} dropped this client: {self._reason(0.5)}"
                ) from exc
            if not ok:
                self.rows_pushed += rows
                raise TimeoutError(
                    f"push to {self._where()}: the ring stayed full for {timeout} s "
                    f"({rows} of {sum(p.num_rows for p in pieces)} rows pushed)"
                )
            rows += piece.num_rows
        self.rows_pushed += rows
        return rows

    def push_pylist(self, rows: list[dict[str, Any]], timeout: float | None = None) -> int:
        """Push rows given as dicts (missing keys are null; unknown keys are ignored)."""
        return self.push_arrow(pa.RecordBatch.from_pylist(rows, schema=self.schema), timeout)

    def _conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        want = self.schema
        if batch.schema.equals(want):
            return batch
        names = set(batch.schema.names)
        missing = [n for n in want.names if n not in names]
        extra = sorted(names - set(want.names))
        if not missing and not extra:
            try:
                return batch.select(want.names).cast(want, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                problem = f"a column cannot be cast safely: {exc}"
        else:
            problem = f"missing columns {missing}, unknown columns {extra}"
        raise SchemaMismatchError(
            f"push to {self._where()}: {problem}\n"
            f"  source: {want.to_string(show_schema_metadata=False)}\n"
            f"  batch:  {batch.schema.to_string(show_schema_metadata=False)}"
        )

    def _check_engine(self) -> None:
        if self.closed:
            raise ConnectorError(f"push to {self._where()}: this client is closed")
        if self._engine_word() is None and not self._hung_up:
            return
        if self._end is None:  # hung up without a word: stopped at once, or killed?
            pid = int(self._ring.stats()["consumer_pid"])
            watch = PeerWatch()
            try:  # a process's sockets close a moment before it is reported dead
                deadline = time.monotonic() + 0.2
                while (alive := watch.alive(pid)) and time.monotonic() < deadline:
                    time.sleep(0.005)
                dead = not alive
            finally:
                watch.close()
            if dead:
                raise PeerDiedError(
                    f"push to {self._where()}: the engine's source process (pid {pid}) died; "
                    f"rows pushed since its last committed epoch are lost"
                )
        raise ConnectorError(f"{self._where()} dropped this client: {self._reason()}")

    def close(self, timeout: float = 5.0) -> bool:
        """End of stream, then detach; True if the end of stream reached the ring.

        Never raises because the engine is gone (False then). Idempotent.
        """
        if self.closed:
            return False
        ended = False
        try:
            if self._engine_word() is None and not self._hung_up:
                ended = self._writer.write_eos(timeout=timeout)
        except PeerGoneError:
            ended = False
        finally:
            self._writer.close()
            self._close_attachment()
            if self._doorbell is not None:
                os.close(self._doorbell)
                self._doorbell = None
        return ended

    def _ring_doorbell(self) -> None:
        # full (the source is awake anyway), or the engine is gone: nothing to ring
        with contextlib.suppress(OSError):
            os.write(self._doorbell, b"\x01")  # type: ignore[arg-type]

    def __enter__(self) -> PushClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
