"""Rows as Kafka records: the value, the key, the partition, the timestamp and the headers.

``RecordEncoder(schema, options, partitions, where)`` checks the options against the
stream's schema once (every refusal a ``ConfigError`` naming the option and the
column), then ``encode(batch, first)`` turns a batch into ``RECORDS``: one row per
record, ``first`` being the batch's first row number in its epoch.

* **Value** (``format``): ``json`` — an object of the value columns (timestamps as
  ISO-8601 text, ``Z`` for UTC; decimals as numbers; binary as base64; NaN as
  null); ``text`` — one string column as UTF-8; ``raw`` — one binary (or string)
  column as it is; ``"package.module:function"`` — your function takes the batch of
  value columns and returns one ``bytes`` (or None) per row. The value columns
  are ``columns``, by default every column except the Kafka source's metadata
  (``_topic``, ``_partition``, ``_offset``, ``_timestamp``, ``_key``,
  ``_headers``), so a Kafka → Kafka pass-through writes the values it read.
* **Key** (``key``, default ``_key`` when the stream has it): binary as it is,
  text as UTF-8, any other type as its text (``42``). Null: no key.
* **Partition**: the ``partition`` column when named (checked to be in range),
  else the engine's 64-bit hash of the key bytes (``engine.hashing``) modulo the
  topic's partitions, so a key always goes to one partition; rows without a key
  are spread by their row number. The partition is chosen here, not by the
  client, so that a re-sent epoch sends every record to the same partition as
  before (``connectors.kafka.sink``). Kafka's Java clients hash with murmur2: a
  key written by both lands in different partitions.
* **Timestamp** (``timestamp``, default ``_timestamp`` when present): a timestamp
  column or integer milliseconds; null means the producer's clock.
* **Headers**: the ``_headers`` column when the stream has it (as the Kafka source
  writes it, ``headers = true``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConfigError, DataError
from engine.hashing import bytes_hash

META = ("_topic", "_partition", "_offset", "_timestamp", "_key", "_headers")
HEADERS = pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))
RECORDS = pa.schema(
    [
        ("value", pa.binary()),
        ("key", pa.binary()),
        ("partition", pa.int32()),
        ("timestamp", pa.int64()),
        ("headers", HEADERS),
    ]
)


class RecordEncoder:
    def __init__(self, schema: pa.Schema, o: Any, partitions: int, where: str) -> None:
        self.where, self.partitions, self.fmt = where, partitions, o.format
        names = schema.names
        self.columns = (
            list(o.columns) if o.columns is not None else [n for n in names if n not in META]
        )
        for c in self.columns:
            if c not in names:
                raise ConfigError(f"{where}.columns: the stream has no column {c!r} ({names})")
        if not self.columns:
            raise ConfigError(f"{where}.columns: no value columns (the stream has {names})")
        self.custom: Callable[[pa.RecordBatch], Any] | None = None
        if o.format in ("text", "raw"):
            if len(self.columns) != 1:
                raise ConfigError(
                    f"{where}.columns: format {o.format!r} writes one column; name "
                    f'it (columns = ["..."]) among {self.columns}'
                )
            t = schema.field(self.columns[0]).type
            ok = pa.types.is_string(t) or pa.types.is_large_string(t)
            if not ok and not (
                o.format == "raw" and (pa.types.is_binary(t) or pa.types.is_large_binary(t))
            ):
                raise ConfigError(
                    f"{where}.columns: column {self.columns[0]!r} is {t}; format "
                    f"{o.format!r} needs text{' or binary' * (o.format == 'raw')}"
                )
        elif o.format != "json":
            from engine.importing import load_object

            fn = load_object(
                o.format, f"{where}.format", form="json, text, raw or package.module:function"
            )
            if not callable(fn):
                raise ConfigError(f"{where}.format: {o.format!r} is not a function")
            self.custom = fn
        self.key = o.key if o.key is not None else ("_key" if "_key" in names else None)
        self.partition = o.partition
        self.timestamp = (
            o.timestamp
            if o.timestamp is not None
            else ("_timestamp" if "_timestamp" in names else None)
        )
        for opt in ("key", "partition", "timestamp"):
            col = getattr(self, opt)
            if col is not None and col not in names:
                raise ConfigError(f"{where}.{opt}: the stream has no column {col!r} ({names})")
        if self.partition is not None and not pa.types.is_integer(
            schema.field(self.partition).type
        ):
            raise ConfigError(
                f"{where}.partition: column {self.partition!r} is "
                f"{schema.field(self.partition).type}, not an integer"
            )
        if self.timestamp is not None:
            t = schema.field(self.timestamp).type
            if not (pa.types.is_timestamp(t) or pa.types.is_integer(t)):
                raise ConfigError(
                    f"{where}.timestamp: column {self.timestamp!r} is {t}; a "
                    "timestamp or integer milliseconds is needed"
                )
        self.headers = "_headers" in names and schema.field("_headers").type == HEADERS
        self._json = msgspec.json.Encoder(decimal_format="number")
        self._fields = [  # each value column's '{"name":' or ',"name":', made once
            ("{" if i == 0 else ",") + self._json.encode(c).decode() + ":"
            for i, c in enumerate(self.columns)
        ]

    def encode(self, batch: pa.RecordBatch, first: int) -> pa.RecordBatch:
        n = batch.num_rows
        keys = self._keys(batch)
        cols = [
            self._values(batch.select(self.columns)),
            keys,
            self._partitions(batch, keys, first),
            self._timestamps(batch),
            batch.column("_headers") if self.headers else pa.nulls(n, HEADERS),
        ]
        return pa.RecordBatch.from_arrays(cols, schema=RECORDS)

    # -- parts ------------------------------------------------------------------------------
    def _values(self, b: pa.RecordBatch) -> pa.Array:
        if self.fmt in ("text", "raw"):
            return b.column(0).cast(pa.binary())
        if self.custom is not None:
            out = self.custom(b)
            arr = out if isinstance(out, pa.Array) else pa.array(list(out), pa.binary())
            if len(arr) != b.num_rows:
                raise DataError(
                    f"{self.where}.format: {self.fmt} returned {len(arr)} values "
                    f"for {b.num_rows} rows"
                )
            return arr.cast(pa.binary())
        parts: list[Any] = []
        for i, field in enumerate(self._fields):
            parts += [field, _json_text(b.column(i), self._json)]
        return pc.binary_join_element_wise(*parts, "}", "").cast(pa.binary())

    def _keys(self, b: pa.RecordBatch) -> pa.Array:
        if self.key is None:
            return pa.nulls(b.num_rows, pa.binary())
        col = b.column(self.key)
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        t = col.type
        if not (
            pa.types.is_binary(t)
            or pa.types.is_string(t)
            or pa.types.is_large_binary(t)
            or pa.types.is_large_string(t)
        ):
            col = col.cast(pa.string())
        return col.cast(pa.binary())

    def _partitions(self, b: pa.RecordBatch, keys: pa.Array, first: int) -> pa.Array:
        n, parts = b.num_rows, self.partitions
        if self.partition is not None:
            col = b.column(self.partition)
            bad = pc.or_kleene(pc.less(col, 0), pc.greater_equal(col, parts))
            if col.null_count or pc.any(bad).as_py():
                row = int(np.flatnonzero(pc.fill_null(bad, True).to_numpy(zero_copy_only=False))[0])
                raise DataError(
                    f"{self.where}.partition: row {first + row} has partition "
                    f"{col[row].as_py()!r}; the topic has {parts} (0..{parts - 1})"
                )
            return col.cast(pa.int32())
        spread = (np.arange(first, first + n, dtype=np.int64) % parts).astype(np.int32)
        if keys.null_count == n:
            return pa.array(spread)
        hashed = (bytes_hash(keys) % np.uint64(parts)).astype(np.int32)
        if keys.null_count:
            hashed = np.where(keys.is_null().to_numpy(zero_copy_only=False), spread, hashed)
        return pa.array(hashed)

    def _timestamps(self, b: pa.RecordBatch) -> pa.Array:
        if self.timestamp is None:
            return pa.nulls(b.num_rows, pa.int64())
        col = b.column(self.timestamp)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("ms", col.type.tz), safe=False)
        return col.cast(pa.int64())


_NEEDS_ESCAPE = r'["\\\x00-\x1f]'


def _json_text(col: pa.Array, enc: msgspec.json.Encoder) -> pa.Array:
    """The column's values as JSON text (no nulls: ``null``), vectorised for the common
    types; the others through ``msgspec`` value by value."""
    t = col.type
    if pa.types.is_dictionary(t):
        return _json_text(col.dictionary_decode(), enc)
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        text = col.cast(pa.string())
    elif pa.types.is_floating(t):  # NaN and infinities are not JSON numbers: null
        text = pc.if_else(pc.is_finite(col), col.cast(pa.string()), pa.scalar(None, pa.string()))
        whole = pc.match_substring_regex(text, "^-?[0-9]+$")  # 2.0 is "2": keep it a float
        text = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        if pc.any(pc.match_substring_regex(col, _NEEDS_ESCAPE)).as_py():
            text = pa.array([None if v is None else enc.encode(v).decode()
                             for v in col.to_pylist()], pa.string())  # fmt: skip
        else:
            text = pc.binary_join_element_wise('"', col.cast(pa.string()), '"', "")
    elif pa.types.is_timestamp(t):
        utc = t.tz in ("UTC", "+00:00", "Etc/UTC", "Z")
        fmt = "%Y-%m-%dT%H:%M:%S" + ("Z" if utc else "%z" if t.tz else "")
        text = pc.binary_join_element_wise('"', pc.strftime(col, format=fmt), '"', "")
    elif pa.types.is_date(t) or pa.types.is_time(t):
        text = pc.binary_join_element_wise('"', col.cast(pa.string()), '"', "")
    elif pa.types.is_duration(t):
        text = col.cast(pa.int64()).cast(pa.string())
    elif pa.types.is_null(t):
        return pa.array(["null"] * len(col), pa.string())
    else:  # decimals (numbers), binary (base64), lists, structs, maps
        text = pa.array([enc.encode(v).decode() for v in col.to_pylist()], pa.string())
    return pc.fill_null(text, "null")


def check_sizes(records: pa.RecordBatch, first_row: int, limit: int, where: str) -> None:
    """Raise ``DataError`` naming the first row whose record (value and key) is over
    ``limit`` bytes: the producer would refuse it at commit, when it can only fail."""
    size = pc.add(pc.binary_length(records.column(0)).fill_null(0),
                  pc.binary_length(records.column(1)).fill_null(0)).to_numpy()  # fmt: skip
    if len(size) and size.max() > limit:
        i = int(size.argmax())
        raise DataError(
            f"{where}: row {first_row + i} of the epoch encodes to a record of {size[i]:,} "
            f"bytes; the sink's producer takes records up to {limit:,} bytes "
            "(a broker may refuse smaller ones: its message.max.bytes)"
        )
