"""The ``pgoutput`` logical replication protocol (version 1), decoded.

PostgreSQL's built-in output plugin sends one binary message per event of a
committed transaction, in commit order: ``B`` (begin), then ``R`` (the columns
of a table, before its first change in this session or after it changes),
``I``/``U``/``D`` (a row inserted, updated, deleted) and ``T`` (tables
truncated), then ``C`` (commit). ``Y`` (a type), ``O`` (origin) and ``M``
(logical messages) may appear and are skipped. Integers are big-endian;
strings end with a NUL byte; times are microseconds since 2000-01-01 UTC.

``decode(payload)`` returns one of the message classes below. Tuple data is
kept as bytes: ``values`` holds, per column, the text bytes, ``None`` for SQL
NULL, or ``UNCHANGED`` for a TOASTed value the update did not change (which
the old tuple of a ``REPLICA IDENTITY FULL`` table supplies). A malformed
payload raises ``PgOutputError`` with the message kind and offset.

Reference: "Logical Replication Message Formats" in the PostgreSQL manual.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from engine.errors import ConnectorError

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01
UNCHANGED = object()  # a TOASTed value that an update left as it was

_Q = struct.Struct(">Q")
_QQq = struct.Struct(">QQq")
_I = struct.Struct(">I")
_H = struct.Struct(">H")
_qqI = struct.Struct(">QqI")


class PgOutputError(ConnectorError):
    """A pgoutput payload that does not parse (a bug or a protocol change: not retried)."""


@dataclass(frozen=True)
class RelationColumn:
    name: str
    type_oid: int
    typmod: int
    key: bool


@dataclass(frozen=True)
class Relation:
    relid: int
    namespace: str
    name: str
    replica_identity: str  # d(efault), f(ull), i(ndex), n(othing)
    columns: tuple[RelationColumn, ...]

    @property
    def qualified(self) -> str:
        return f"{self.namespace}.{self.name}"


@dataclass(frozen=True)
class Begin:
    final_lsn: int  # the commit record's position
    commit_time_us: int  # Unix microseconds
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int  # the position after the transaction
    commit_time_us: int


@dataclass(frozen=True)
class Insert:
    relid: int
    new: list


@dataclass(frozen=True)
class Update:
    relid: int
    old: list | None  # None unless the replica identity sent it (FULL, or a changed key)
    new: list
    old_is_key: bool  # the old tuple holds only the key columns ('K')


@dataclass(frozen=True)
class Delete:
    relid: int
    old: list
    old_is_key: bool


@dataclass(frozen=True)
class Truncate:
    relids: tuple[int, ...]


@dataclass(frozen=True)
class Other:
    kind: str


Message = Begin | Commit | Relation | Insert | Update | Delete | Truncate | Other


def decode(payload: bytes | memoryview) -> Message:
    buf = bytes(payload)
    if not buf:
        raise PgOutputError("an empty pgoutput message")
    kind = chr(buf[0])
    try:
        if kind in "IUD":
            return _change(kind, buf)
        if kind == "B":
            final, ts, xid = _qqI.unpack_from(buf, 1)
            return Begin(final, ts + PG_EPOCH_US, xid)
        if kind == "C":
            commit, end, ts = _QQq.unpack_from(buf, 2)
            return Commit(commit, end, ts + PG_EPOCH_US)
        if kind == "R":
            return _relation(buf)
        if kind == "T":
            (n,) = _I.unpack_from(buf, 1)
            return Truncate(tuple(_I.unpack_from(buf, 6 + 4 * i)[0] for i in range(n)))
        return Other(kind)
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise PgOutputError(
            f"pgoutput message {kind!r} ({len(buf)} bytes) is malformed: {exc}"
        ) from exc


def insert_values(buf: bytes) -> list:
    """The new row of an insert message (``I`` relid ``N`` tuple), without objects around it."""
    try:
        return tuple_data(buf, 6)[0]
    except (struct.error, IndexError) as exc:
        raise PgOutputError(f"pgoutput message 'I' ({len(buf)} bytes) is malformed: {exc}") from exc


def _change(kind: str, buf: bytes) -> Insert | Update | Delete:
    (relid,) = _I.unpack_from(buf, 1)
    at = 5
    if kind == "I":
        _expect(buf, at, b"N", kind)
        new, _ = tuple_data(buf, at + 1)
        return Insert(relid, new)
    if kind == "D":
        tag = buf[at : at + 1]
        if tag not in (b"K", b"O"):
            raise PgOutputError(f"delete of relation {relid}: tag {tag!r} at offset {at}")
        old, _ = tuple_data(buf, at + 1)
        return Delete(relid, old, tag == b"K")
    old = None
    tag = buf[at : at + 1]
    if tag in (b"K", b"O"):
        old, at = tuple_data(buf, at + 1)
    _expect(buf, at, b"N", kind)
    new, _ = tuple_data(buf, at + 1)
    return Update(relid, old, new, tag == b"K")


def _expect(buf: bytes, at: int, tag: bytes, kind: str) -> None:
    if buf[at : at + 1] != tag:
        raise PgOutputError(
            f"pgoutput {kind!r}: expected {tag!r} at offset {at}, got {buf[at : at + 1]!r}"
        )


def tuple_data(buf: bytes, at: int) -> tuple[list, int]:
    """The column values at ``buf[at:]`` and the offset after them (the hot loop of the
    change stream: byte indexing and one struct call per value)."""
    n = (buf[at] << 8) | buf[at + 1]
    at += 2
    values: list = [None] * n
    unpack = _I.unpack_from
    for i in range(n):
        tag = buf[at]
        if tag == 116:  # 't': a value in text form
            start = at + 5
            at = start + unpack(buf, at + 1)[0]
            values[i] = buf[start:at]
        elif tag == 110:  # 'n': null
            at += 1
        elif tag == 117:  # 'u': an unchanged TOASTed value
            values[i] = UNCHANGED
            at += 1
        else:
            raise PgOutputError(
                f"tuple value tag {chr(tag)!r} at offset {at} (binary values are not requested)"
            )
    if at > len(buf):
        raise PgOutputError(f"tuple data runs past the message end ({at} > {len(buf)})")
    return values, at


def _cstring(buf: bytes, at: int) -> tuple[str, int]:
    end = buf.index(0, at)
    return buf[at:end].decode("utf-8"), end + 1


def _relation(buf: bytes) -> Relation:
    (relid,) = _I.unpack_from(buf, 1)
    namespace, at = _cstring(buf, 5)
    name, at = _cstring(buf, at)
    identity = chr(buf[at])
    (n,) = _H.unpack_from(buf, at + 1)
    at += 3
    cols = []
    for _ in range(n):
        flags = buf[at]
        col, at = _cstring(buf, at + 1)
        oid, typmod = struct.unpack_from(">Ii", buf, at)
        at += 8
        cols.append(RelationColumn(col, oid, typmod, bool(flags & 1)))
    return Relation(relid, namespace or "pg_catalog", name, identity, tuple(cols))


def lsn_text(lsn: int) -> str:
    """``0/16B3748`` form of a WAL position."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)
