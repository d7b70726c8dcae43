"""State files: one file per worker (or sink final stage) and epoch, several named Arrow tables.

Layout (all integers little-endian; every stream starts 8-byte aligned)::

    0          8        12       16
    +----------+--------+--------+
    | magic    | version| count  |        magic b"RSSTATE\\x00", version 1, count tables
    +----------+--------+--------+
    then ``count`` entries, each:
    +--------+-----------+-----+---------------+----------------------+-----+
    | name   | name      | pad | stream length | Arrow IPC *stream*   | pad |
    | len u32| utf-8     | to 8| u64           | (schema + batches)   | to 8|
    +--------+-----------+-----+---------------+----------------------+-----+

Each table is a complete Arrow IPC stream (its schema, metadata included, then
its batches; an empty table is a schema and no batch), so a reader slices the
file's buffer and opens each stream without copying. One file per worker keeps
the manifest short and the fsyncs few; a worker namespaces its operators'
tables in the names (``"op2/partials"``).

Durability: ``write_state`` writes ``<path>.tmp-<pid>``, fsyncs it, renames it
to ``path`` and fsyncs the directory, so ``path`` is either absent or
complete. The checksum (``"sha256:<hex>"``) covers every byte of the file and
goes into the manifest; ``read_state`` verifies size and checksum before it
parses anything. Not guaranteed: that a file survives being modified after it
was written (that is what the checksum catches).

Files are created with ``engine.durable.create_exclusive`` (never through a
symlink) and published with ``engine.durable.publish``.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from engine.durable import create_exclusive, publish
from engine.errors import CorruptCheckpointError

MAGIC = b"RSSTATE\x00"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sII")  # magic, version, table count
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
CHECKSUM_ALGORITHM = "sha256"


@dataclass(frozen=True)
class WrittenState:
    """What ``write_state`` wrote: the file, its size and its checksum."""

    path: Path
    bytes: int
    checksum: str


def temp_path(final: Path) -> Path:
    """The temporary name ``final`` is written under by this process."""
    return final.with_name(f"{final.name}.tmp-{os.getpid()}")


def open_temp(tmp: Path) -> BinaryIO:
    """``tmp`` created anew for writing (a dead writer's file of the same name is replaced)."""
    tmp.unlink(missing_ok=True)
    return os.fdopen(create_exclusive(tmp, 0o600), "wb")


def is_temp(path: Path) -> bool:
    """True for a name ``temp_path`` makes (left behind if the writer died)."""
    return ".tmp-" in path.name and path.name.rpartition(".tmp-")[2].isdigit()


class _HashingWriter:
    """Writes to a file, hashing and counting every byte; fsyncs on close."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview | pa.Buffer) -> None:
        view = memoryview(data)
        self.hash.update(view)
        self.f.write(view)
        self.size += view.nbytes

    def pad(self) -> None:
        if self.size % 8:
            self.write(b"\x00" * (8 - self.size % 8))

    def close(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()


def write_state(path: Path, tables: dict[str, pa.Table]) -> WrittenState:
    """Write ``tables`` durably as one state file at ``path`` (see the module docstring)."""
    path = Path(path)
    tmp = temp_path(path)
    out = _HashingWriter(open_temp(tmp))
    try:
        out.write(_HEADER.pack(MAGIC, FORMAT_VERSION, len(tables)))
        for name, table in tables.items():
            encoded = name.encode("utf-8")
            out.write(_U32.pack(len(encoded)))
            out.write(encoded)
            out.pad()
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            stream = sink.getvalue()
            out.write(_U64.pack(stream.size))
            out.write(stream)
            out.pad()
        out.close()
    except BaseException:
        out.f.close()
        tmp.unlink(missing_ok=True)
        raise
    publish(tmp, path)
    return WrittenState(path, out.size, f"{CHECKSUM_ALGORITHM}:{out.hash.hexdigest()}")


def _read_verified(path: Path, expected_checksum: str, expected_bytes: int | None) -> pa.Buffer:
    algorithm, _, _ = expected_checksum.partition(":")
    if algorithm not in hashlib.algorithms_available:
        raise CorruptCheckpointError(
            f"state file {path}: unknown checksum algorithm {algorithm!r} in {expected_checksum!r}"
        )
    try:
        with pa.OSFile(str(path), "rb") as f:
            buf = f.read_buffer()
    except FileNotFoundError as e:
        raise CorruptCheckpointError(f"state file {path}: missing") from e
    if expected_bytes is not None and buf.size != expected_bytes:
        raise CorruptCheckpointError(
            f"state file {path}: {buf.size} bytes, the manifest records {expected_bytes}"
        )
    actual = f"{algorithm}:{hashlib.new(algorithm, memoryview(buf)).hexdigest()}"
    if actual != expected_checksum:
        raise CorruptCheckpointError(
            f"state file {path}: checksum mismatch: {actual[:23]}…, "
            f"the manifest records {expected_checksum[:23]}…"
        )
    return buf


def verify_state(path: Path, expected_checksum: str, expected_bytes: int | None = None) -> None:
    """Raise ``CorruptCheckpointError`` unless ``path`` exists with that size and checksum."""
    _read_verified(Path(path), expected_checksum, expected_bytes)


def read_state(
    path: Path, expected_checksum: str, expected_bytes: int | None = None
) -> dict[str, pa.Table]:
    """The tables of the state file ``path``, after verifying its size and checksum.

    The tables are zero-copy slices of one buffer read from the file.
    """
    path = Path(path)
    buf = _read_verified(path, expected_checksum, expected_bytes)
    view = memoryview(buf)

    def corrupt(reason: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"state file {path}: {reason}")

    def need(pos: int, n: int, what: str) -> None:
        if pos + n > buf.size:
            raise corrupt(f"truncated in {what} at byte {pos} ({buf.size} bytes)")

    need(0, _HEADER.size, "the header")
    magic, version, count = _HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise corrupt(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise corrupt(
            f"format version {version} is not supported (this build reads {FORMAT_VERSION})"
        )
    pos = _HEADER.size
    tables: dict[str, pa.Table] = {}
    for i in range(count):
        need(pos, 4, f"entry {i}")
        (name_len,) = _U32.unpack_from(view, pos)
        pos += 4
        need(pos, name_len, f"entry {i}'s name")
        name = bytes(view[pos : pos + name_len]).decode("utf-8")
        pos = _align8(pos + name_len)
        need(pos, 8, f"table {name!r}'s length")
        (length,) = _U64.unpack_from(view, pos)
        pos += 8
        need(pos, length, f"table {name!r}")
        try:
            tables[name] = pa.ipc.open_stream(buf.slice(pos, length)).read_all()
        except pa.ArrowInvalid as e:
            raise corrupt(f"table {name!r} is not an Arrow IPC stream: {e}") from e
        pos = _align8(pos + length)
    if pos != buf.size:
        raise corrupt(f"{buf.size - pos} unexpected bytes after the last table")
    return tables


def _align8(n: int) -> int:
    return (n + 7) & ~7
