"""Attach a user's own process to a running engine: push rows in, subscribe to rows out.

::

    from engine import connect

    with connect(".ringstream/run").source("trades") as src:   # a [[sources]] type "push"
        src.push_arrow(batch)                                    # or push_pylist(rows)

    for batch in connect(".ringstream/run").subscribe("alerts"):  # a [[sinks]] type "subscribe"
        ...

Rendezvous: the engine's push source (``connectors.push``) and subscribe sink
(``connectors.subscribe``) listen on Unix sockets ``<dir>/<name>.source.sock``
and ``<dir>/<name>.sink.sock``. The wire protocol is one JSON object per line:

1. client → engine: ``{"hello": 1, "pid": <pid>, "role": "push" | "subscribe"}``;
2. engine → client: ``{"ring": <segment>, "capacity": <bytes>, "schema": <base64 Arrow
   IPC schema>}`` — a fresh ring made for this client alone — or ``{"error": <why>}``;
3. the client maps the ring (push: as its producer, and writes the SCHEMA frame
   first; subscribe: as its consumer) and sends ``{"attached": true}``; the engine
   then unlinks the segment's name, so the memory lives exactly as long as a mapping
   of it: whoever dies, nothing is left in ``/dev/shm``;
4. the socket stays open for the client's lifetime: its EOF is how the engine learns
   that the client died; the engine's last line, ``{"end": <why or null>, ...}``,
   says why it let the client go (a subscriber's line also carries
   ``dropped_batches`` and ``dropped_rows``).

Errors: no engine or no such source/sink → :class:`ConnectorError` naming the
directory and the name; the engine refused or dropped this client →
:class:`ConnectorError` with the engine's reason; a batch whose columns cannot
be matched to the source's schema → :class:`SchemaMismatchError`; the engine's
process died → :class:`PeerDiedError`; a subscriber detached by the engine
(policy ``block`` and stuck, or the pipeline stopped while its ring was full) →
:class:`PeerClosedError` with the reason, after every batch already in its ring.

Not guaranteed: a pushed row is in the engine's shared memory when ``push_*``
returns, not yet in the pipeline; rows the source has not read when the engine
stops (or crashes) are lost, and a push source is not replayed after a crash
(see ``connectors.push``). A subscriber sees only batches written after it attached.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import msgspec
import pyarrow as pa

from engine.errors import (
    ConnectorError,
    PeerClosedError,
    PeerDiedError,
    PeerGoneError,
    SchemaMismatchError,
)
from engine.shm import FrameKind, Ring
from engine.shm.arrow_codec import BatchEncoder
from engine.shm.peer import PeerWatch
from engine.shm.reader import RingReader
from engine.shm.writer import RingWriter

DEFAULT_DIR = ".ringstream/run"
PROTOCOL = 1
HANDSHAKE_TIMEOUT_S = 10.0
_MAX_LINE = 1 << 16
_EOS, _DATA = int(FrameKind.EOS), int(FrameKind.DATA)
Kind = Literal["source", "sink"]

__all__ = ["DEFAULT_DIR", "Engine", "PushClient", "Subscription", "connect"]


# -- wire protocol (shared with connectors.push / connectors.subscribe) ---------------------
def socket_path(directory: str | os.PathLike[str], name: str, kind: Kind) -> Path:
    """Where the engine's ``kind`` named ``name`` listens."""
    return Path(directory) / f"{name}.{kind}.sock"


def encode(message: dict[str, Any]) -> bytes:
    return msgspec.json.encode(message) + b"\n"


def schema_to_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_from_text(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


class LineBuffer:
    """Bytes in, whole JSON-object lines out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        out = []
        while (i := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[:i])
            del self._buf[: i + 1]
            try:
                msg = msgspec.json.decode(line)
            except msgspec.DecodeError:
                msg = None
            out.append(msg if isinstance(msg, dict) else {"error": f"bad line {line[:80]!r}"})
        if len(self._buf) > _MAX_LINE:
            raise ConnectorError(f"a protocol line longer than {_MAX_LINE} bytes")
        return out


@contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An AF_UNIX address for ``path``; one longer than the kernel's ~107 bytes goes through
    ``/proc/self/fd/<dir fd>/<name>`` (the directory's fd stays open while in use)."""
    text = str(path)
    if len(os.fsencode(text)) < 100:
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def read_line(sock: socket.socket, buffer: LineBuffer, timeout: float) -> dict[str, Any] | None:
    """The next line from a blocking socket; None on EOF or when ``timeout`` expires."""
    end = time.monotonic() + timeout
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            data = sock.recv(4096)
        except (TimeoutError, OSError):
            return None
        if not data:
            return None
        lines = buffer.feed(data)
        if lines:
            return lines[0]


def split_to_fit(batch: pa.RecordBatch, limit: int) -> list[pa.RecordBatch]:
    """Row slices of ``batch`` whose frames are at most ``limit`` bytes (zero-copy slices)."""
    size = BatchEncoder.size_bound(batch)
    if size <= limit or batch.num_rows <= 1:
        return [batch]
    parts = -(-size // max(1, limit // 2))
    step = max(1, -(-batch.num_rows // parts))
    out: list[pa.RecordBatch] = []
    for off in range(0, batch.num_rows, step):
        out.extend(split_to_fit(batch.slice(off, step), limit))
    return out


# -- the client ---------------------------------------------------------------------------
def connect(dir: str | os.PathLike[str] = DEFAULT_DIR) -> Engine:
    """A handle on the engine whose push sources and subscribe sinks listen in ``dir``.

    Connecting is lazy: errors (no engine, no such name) come from :meth:`Engine.source`
    and :meth:`Engine.subscribe`.
    """
    return Engine(dir)


class Engine:
    """The push sources and subscribe sinks a running engine publishes in one directory."""

    def __init__(self, dir: str | os.PathLike[str] = DEFAULT_DIR) -> None:
        self.dir = Path(dir)

    def published(self, kind: Kind) -> list[str]:
        """Names with a socket of ``kind`` in the directory (live or left by a killed engine)."""
        suffix = f".{kind}.sock"
        try:
            names = os.listdir(self.dir)
        except OSError:
            return []
        return sorted(n[: -len(suffix)] for n in names if n.endswith(suffix))

    def source(self, name: str, *, wait: float = 0.0) -> PushClient:
        """Attach as a new producer of push source ``name``; wait up to ``wait`` s for it."""
        sock, welcome, ring = self._handshake("source", name, "push", wait)
        try:
            writer = ring.writer()
            schema = schema_from_text(welcome["schema"])
            writer.write_schema(schema, timeout=HANDSHAKE_TIMEOUT_S)
            sock.sendall(encode({"attached": True}))
        except BaseException:
            ring.close()
            sock.close()
            raise
        return PushClient(name, self.dir, sock, ring, writer, schema)

    def subscribe(
        self, name: str, *, timeout: float | None = None, wait: float = 0.0
    ) -> Subscription:
        """Attach as a new subscriber of sink ``name``: an iterator of the batches it writes
        from now on. ``timeout``: the longest wait for one batch (None: as long as the
        engine lives); ``wait``: how long to wait for the sink to appear."""
        sock, welcome, ring = self._handshake("sink", name, "subscribe", wait)
        try:
            reader = ring.reader()
            sock.sendall(encode({"attached": True}))
        except BaseException:
            ring.close()
            sock.close()
            raise
        return Subscription(
            name, self.dir, sock, ring, reader, schema_from_text(welcome["schema"]), timeout
        )

    def _missing(self, kind: Kind, name: str) -> str:
        table, typ = ("[[sources]]", "push") if kind == "source" else ("[[sinks]]", "subscribe")
        found = self.published(kind)
        there = f"; published there: {found}" if found else ""
        return (
            f"no running engine publishes {kind} {name!r} in {self.dir} (is the pipeline "
            f'running with a {table} of type "{typ}" named {name!r}?){there}'
        )

    def _handshake(
        self, kind: Kind, name: str, role: str, wait: float
    ) -> tuple[socket.socket, dict[str, Any], Ring]:
        path = socket_path(self.dir, name, kind)
        deadline = time.monotonic() + wait
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                with unix_address(path) as address:
                    sock.connect(address)
                break
            except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
                sock.close()
                if time.monotonic() >= deadline:
                    raise ConnectorError(self._missing(kind, name)) from None
                time.sleep(0.05)
            except BaseException:
                sock.close()
                raise
        try:
            sock.sendall(encode({"hello": PROTOCOL, "pid": os.getpid(), "role": role}))
            reply = read_line(sock, LineBuffer(), HANDSHAKE_TIMEOUT_S)
            if reply is None:
                raise ConnectorError(
                    f"{kind} {name!r} in {self.dir} did not answer the handshake within "
                    f"{HANDSHAKE_TIMEOUT_S} s (is the engine stopping?)"
                )
            if "error" in reply or "ring" not in reply:
                raise ConnectorError(
                    f"{kind} {name!r} in {self.dir} refused this client: "
                    f"{reply.get('error', reply)}"
                )
            ring = Ring.attach(str(reply["ring"]))
        except BaseException:
            sock.close()
            raise
        return sock, reply, ring


class _Attachment:
    """What a push client and a subscription share: the socket, the ring, the engine's word."""

    _kind = ""

    def __init__(self, name: str, directory: Path, sock: socket.socket, ring: Ring) -> None:
        self.name = name
        self.dir = directory
        self._sock = sock
        self._ring = ring
        self._lines = LineBuffer()
        self._end: dict[str, Any] | None = None  # the engine's last line, once read
        self._hung_up = False
        self.closed = False

    def _engine_word(self, wait: float = 0.0) -> dict[str, Any] | None:
        """The engine's last line if it sent one (or hung up) within ``wait`` s."""
        while self._end is None and not self._hung_up:
            try:
                readable, _, _ = select.select([self._sock], [], [], wait)
            except (OSError, ValueError):
                self._hung_up = True
                break
            if not readable:
                break
            try:
                data = self._sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                self._hung_up = True
                break
            for msg in self._lines.feed(data):
                if "end" in msg or "error" in msg:
                    self._end = msg
        return self._end

    def _reason(self, wait: float = 0.0) -> str | None:
        msg = self._engine_word(wait)
        if msg is not None:
            return str(msg.get("end") or msg.get("error") or "no reason given")
        return "the engine closed the connection" if self._hung_up else None

    def _where(self) -> str:
        return f"{self._kind} {self.name!r} in {self.dir}"

    def _close_attachment(self) -> None:
        self.closed = True
        self._ring.close()
        self._sock.close()


class PushClient(_Attachment):
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
    ) -> None:
        super().__init__(name, directory, sock, ring)
        self._writer = writer
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
        return ended

    def __enter__(self) -> PushClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscription(_Attachment):
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
                batch = pa.concat_batches([view])  # a copy: the ring's bytes are reused
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
