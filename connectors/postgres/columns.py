"""PostgreSQL columns as Arrow columns, for the change-capture source.

``Column`` is one table column as the source emits it: its Arrow type, how the
snapshot selects it, and how its text form (what ``pgoutput`` sends, and what a
``::text`` cast gives) becomes Arrow values. The mapping (``arrow_type``):

=====================================  ==========================================
PostgreSQL                             Arrow
=====================================  ==========================================
smallint, integer, bigint              int16, int32, int64
real, double precision                 float32, float64
numeric(p, s)                          decimal128(p, s) (decimal256 past 38 digits)
numeric (no precision)                 decimal128(38, 10): a value with more digits
                                       is a bad record naming the column
boolean                                bool
text, varchar, char(n), name, citext,  string (char(n) keeps its padding)
enums
timestamp, timestamptz                 timestamp[us], timestamp[us, UTC]
date, time                             date32, time64[us]
json, jsonb                            string (the JSON text)
uuid                                   string (the canonical text form)
bytea                                  binary
one-dimensional arrays of the above    list<...> of the element's type
scalar types (not json, bytea, ...)
=====================================  ==========================================

A domain maps as its base type. Any other type is refused by ``arrow_type``
with the column's name (``UnsupportedColumn``): cast it in a view, or leave the
table out.

Conversion is vectorised: a column's text values are collected as bytes and
cast by Arrow (``from_text``); only ``bytea``, ``time`` and arrays are parsed
value by value. A value Arrow cannot cast raises ``ValueError`` for the batch;
``bad_rows`` then finds the rows to blame, one by one.

``sort_key`` turns a primary-key value's text into a Python value that orders
as PostgreSQL orders the column (the snapshot sorts text keys with
``COLLATE "C"``, which is code-point order): the snapshot's resume logic compares
keys of the change stream with the chunk where a resumed snapshot began.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

_SCALARS: dict[str, pa.DataType] = {
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "bool": pa.bool_(),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "name": pa.string(),
    "citext": pa.string(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", "UTC"),
    "date": pa.date32(),
    "time": pa.time64("us"),
    "json": pa.string(),
    "jsonb": pa.string(),
    "uuid": pa.string(),
    "bytea": pa.binary(),
}
# read natively by the snapshot's ADBC query (then cast); the others are selected as ::text
_NATIVE = {"int2", "int4", "int8", "float4", "float8", "bool", "text", "varchar", "bpchar",
           "name", "timestamp", "timestamptz", "date", "bytea"}  # fmt: skip
_ARRAY_ELEMENTS = {"int2", "int4", "int8", "float4", "float8", "bool", "text", "varchar",
                   "bpchar", "numeric", "date", "timestamp", "timestamptz", "uuid"}  # fmt: skip
UNCONSTRAINED_NUMERIC = pa.decimal128(38, 10)


class UnsupportedColumn(ValueError):
    """A column whose type has no Arrow mapping here."""


@dataclass(frozen=True)
class Column:
    """One column of a captured table. ``type_name`` is the base type's ``typname``
    (``_int4`` for ``int4[]``), ``typmod`` its ``atttypmod``, ``typtype`` ``'e'`` for an
    enum; ``sql_type`` the declared type as ``format_type`` writes it (for messages and
    casts)."""

    name: str
    type_name: str
    typmod: int
    sql_type: str
    typtype: str = "b"
    nullable: bool = True

    @property
    def arrow(self) -> pa.DataType:
        return arrow_type(self)

    def field(self) -> pa.Field:
        return pa.field(self.name, self.arrow, nullable=True)

    def select_sql(self) -> str:
        """How the snapshot's query selects this column."""
        quoted = '"' + self.name.replace('"', '""') + '"'
        if self.type_name in _NATIVE and self.typtype != "e":
            return quoted
        return f"{quoted}::text AS {quoted}"

    def from_snapshot(self, values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        """A column of the snapshot's query result as this column's Arrow type."""
        if self.type_name in _NATIVE and self.typtype != "e":
            return values.cast(self.arrow)
        return from_text(self, values.cast(pa.string()))


def arrow_type(col: Column) -> pa.DataType:
    """The Arrow type of ``col``; ``UnsupportedColumn`` names it when there is none."""
    t = col.type_name
    if col.typtype == "e":
        return pa.string()
    if t == "numeric":
        return _numeric(col.typmod)
    if t in _SCALARS:
        return _SCALARS[t]
    if t.startswith("_") and t[1:] in _ARRAY_ELEMENTS:
        element = Column(col.name, t[1:], col.typmod, col.sql_type)
        return pa.list_(arrow_type(element))
    raise UnsupportedColumn(
        f"column {col.name!r} has type {col.sql_type}, which the change-capture source cannot "
        "map to Arrow (supported: integers, real/double, numeric, boolean, text types, enums, "
        "timestamp[tz], date, time, json[b], uuid, bytea, one-dimensional arrays of scalars); "
        "leave the table out or capture a table whose column is cast to one of these"
    )


def _numeric(typmod: int) -> pa.DataType:
    if typmod < 4:
        return UNCONSTRAINED_NUMERIC
    precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
    if precision <= 38:
        return pa.decimal128(precision, scale)
    return pa.decimal256(min(precision, 76), scale)


def from_text(col: Column, texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Text values (string or binary, nulls kept) as ``col``'s Arrow type.

    Raises ``ValueError`` (or ``pyarrow.ArrowInvalid``) when a value does not convert."""
    target = col.arrow
    if pa.types.is_binary(texts.type):
        texts = texts.cast(pa.string())
    if pa.types.is_string(target):
        return texts
    if pa.types.is_boolean(target):
        bad = pc.and_(pc.is_valid(texts), pc.invert(pc.is_in(texts, pa.array(["t", "f"]))))
        if pc.any(bad).as_py():
            raise ValueError("a boolean that is neither 't' nor 'f'")
        return pc.equal(texts, "t")
    if pa.types.is_binary(target):
        return pa.array([_bytea(v) for v in texts.to_pylist()], pa.binary())
    if pa.types.is_time(target):
        return pa.array(
            [None if v is None else dt.time.fromisoformat(v) for v in texts.to_pylist()], target
        )
    if pa.types.is_list(target):
        element = Column(col.name, col.type_name[1:], col.typmod, col.sql_type)
        lists = [None if v is None else _array_items(v) for v in texts.to_pylist()]
        flat = pa.array([x for items in lists if items is not None for x in items], pa.string())
        offsets, at = [], 0
        for items in lists:
            offsets.append(at)
            at += len(items) if items is not None else 0
        offsets.append(at)
        mask = pa.array([items is None for items in lists])
        values = from_text(element, flat)
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, mask=mask)
    return texts.cast(target)


def _bytea(v: str | None) -> bytes | None:
    if v is None:
        return None
    if not v.startswith("\\x"):
        raise ValueError("bytea not in hex form (set bytea_output = 'hex')")
    return bytes.fromhex(v[2:])


def _array_items(text: str) -> list[str | None]:
    """The elements of a one-dimensional array literal ``{a,"b c",NULL}`` as text."""
    if text.startswith("[") or not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f"array literal {text[:40]!r} is not one-dimensional")
    body, items, i = text[1:-1], [], 0
    if not body:
        return []
    while i <= len(body):
        if i < len(body) and body[i] == "{":
            raise ValueError("a multi-dimensional array")
        if i < len(body) and body[i] == '"':
            out, i = [], i + 1
            while body[i] != '"':
                if body[i] == "\\":
                    i += 1
                out.append(body[i])
                i += 1
            items.append("".join(out))
            i += 1
        else:
            end = body.find(",", i)
            end = len(body) if end < 0 else end
            word = body[i:end]
            items.append(None if word == "NULL" else word)
            i = end
        i += 1  # the comma
    return items


def bad_rows(col: Column, texts: pa.Array) -> list[tuple[int, str, str]]:
    """``(row, value, why)`` for each value of ``texts`` that does not convert."""
    found = []
    for i, v in enumerate(
        texts.cast(pa.string()).to_pylist() if pa.types.is_binary(texts.type) else texts.to_pylist()
    ):
        if v is None:
            continue
        try:
            from_text(col, pa.array([v], pa.string()))
        except (ValueError, pa.ArrowException) as exc:
            found.append((i, v, f"not a {col.sql_type}: {exc}"))
    return found


def sort_key(col: Column) -> Callable[[Any], Any]:
    """Text (or a JSON value from a checkpoint) -> a Python value in PostgreSQL's order."""
    t = col.type_name
    if t in ("int2", "int4", "int8"):
        return int
    if t == "numeric":
        return lambda v: Decimal(str(v))
    if t in ("float4", "float8"):
        return float
    if t in ("text", "varchar", "bpchar", "name", "citext", "uuid"):
        return str
    if t == "date":
        return lambda v: dt.date.fromisoformat(str(v))
    if t in ("timestamp", "timestamptz"):
        return lambda v: _timestamp(str(v))
    return None  # type: ignore[return-value]


def _timestamp(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace(" ", "T"))
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


def key_text(value: Any) -> str | int:
    """A key value read from a snapshot batch, as stored in a checkpoint (JSON)."""
    if isinstance(value, int):
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (dt.date, Decimal)):
        return str(value)
    return str(value)
