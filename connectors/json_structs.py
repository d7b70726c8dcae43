"""Flat JSON objects into Arrow columns through msgspec structs: Arrow's JSON reader, faster.

Arrow's reader costs about 430 ns per ~100-byte object read in batches of a few
thousand (most of a Kafka source's time); msgspec decodes the same objects into
slotted structs, and the columns are built from their fields, in about 300 ns.
msgspec is a dependency already (the engine's configuration structs).

``StructRows.for_schema(schema)`` is None unless every field is one whose reading
both agree on: ``int64`` (a JSON integer), ``float64`` (a JSON number), ``string``
and ``bool``, each nullable (a missing field or ``null`` is a null). Then
``rows.batch(data, n)`` reads ``n`` objects, one per line of ``data``, as one batch
of ``schema``, or raises ``NotRead`` for the whole batch. It refuses what Arrow's
reader refuses for these types — a field the schema lacks, a value of another type
(``1.0`` for an integer, ``true`` for a number), an integer beyond int64, a number
beyond a double, a line that is not one object — and text that is not UTF-8, which
Arrow's reader keeps (a caller must check) — so a caller falls back to Arrow's
reader, which names each bad record. A line may hold two objects (so may Arrow's):
the caller makes sure each record opens a line and the count agrees.

Not the same as Arrow's reader: a field given twice in one object is read as its
last value (as JavaScript and Python read it), where Arrow refuses the object; and
a byte-order mark before an object is refused (Arrow skips it). A caller that
accepts a record when either reader does (``connectors.kafka.decode``) gets the
same rows whichever path a batch took.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

# Arrow type -> the Python type msgspec checks (and whether numpy can take the column)
_TYPES: dict[pa.DataType, tuple[type, Any]] = {
    pa.int64(): (int, np.int64),
    pa.float64(): (float, np.float64),
    pa.string(): (str, None),
    pa.bool_(): (bool, None),
}


class NotRead(Exception):
    """The batch did not fit the fast path (a caller reads it with Arrow instead)."""


class StructRows:
    """See the module docstring."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        fields = [(f"f{i}", _TYPES[f.type][0] | None, None) for i, f in enumerate(schema)]
        rename = {f"f{i}": f.name for i, f in enumerate(schema)}  # any text is a JSON name
        row = msgspec.defstruct("Row", fields, rename=rename, forbid_unknown_fields=True,
                                gc=False)  # fmt: skip
        self.decoder = msgspec.json.Decoder(row)
        self.columns: list[tuple[Callable[[Any], Any], pa.DataType, Any]] = [
            (attrgetter(f"f{i}"), f.type, _TYPES[f.type][1]) for i, f in enumerate(schema)
        ]

    @classmethod
    def for_schema(cls, schema: pa.Schema) -> StructRows | None:
        if not len(schema) or any(f.type not in _TYPES or not f.nullable for f in schema):
            return None  # (a required field: Arrow's reader refuses an object without it)
        if len(set(schema.names)) != len(schema.names):
            return None  # (Arrow's reader decides what a twice-named column means)
        return cls(schema)

    def batch(self, data: bytes, rows: int) -> pa.RecordBatch:
        try:
            objs = self.decoder.decode_lines(data)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError) as exc:
            raise NotRead(str(exc)) from None
        if len(objs) != rows:  # (an empty line is skipped; the caller counts records)
            raise NotRead(f"{rows} records gave {len(objs)} objects")
        try:
            arrays = [_column(list(map(get, objs)), typ, dtype)
                      for get, typ, dtype in self.columns]  # fmt: skip
        except (OverflowError, ValueError, UnicodeError, pa.ArrowException) as exc:
            raise NotRead(str(exc)) from None  # an integer beyond int64
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def _column(values: list[Any], typ: pa.DataType, dtype: Any) -> pa.Array:
    """One column: through numpy when it has no null (twice as fast for numbers). A null
    is a TypeError for an integer and NaN for a float (JSON has no NaN of its own)."""
    if dtype is not None:
        try:
            array = np.fromiter(values, dtype=dtype, count=len(values))
            if dtype is not np.float64 or not np.isnan(array).any():
                return pa.array(array, typ)
        except TypeError:
            pass
    return pa.array(values, typ)
