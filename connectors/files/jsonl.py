"""JSON lines, written vectorised: each column rendered to JSON text with Arrow kernels.

``encode_jsonl(batch)`` gives one JSON object per row, each ending in a newline:
numbers and booleans cast to strings, non-finite floats as ``null``, strings
escaped and quoted, timestamps as ISO 8601 in UTC; the columns are joined
element-wise into one line per row and the resulting string array's data buffer
is returned as is. Only nested and binary columns fall back to per-value
``msgspec.json.encode`` (a Python loop per row, for that column only).
"""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_L = pa.large_string()

_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}


def encode_jsonl(batch: pa.RecordBatch) -> memoryview:
    """One JSON object per row, each ending in a newline (see the module docstring)."""
    n = batch.num_rows
    if batch.num_columns == 0 or n == 0:
        return memoryview(b"{}\n" * n)
    parts: list[pa.Array | pa.Scalar] = []
    for i, (field, column) in enumerate(zip(batch.schema, batch.columns, strict=True)):
        key = ("{" if i == 0 else ",") + json.dumps(field.name) + ":"
        parts.append(pa.scalar(key, _L))
        parts.append(_json_text(column))
    parts.append(pa.scalar("}\n", _L))
    lines = pc.binary_join_element_wise(*parts, pa.scalar("", _L))
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + n])
    return memoryview(lines.buffers()[2])[start:end]


def _json_text(col: pa.Array) -> pa.Array:
    """The JSON text of each value as a large_string array without nulls."""
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.dictionary_decode()
        t = col.type
    if pa.types.is_null(t):
        text = pa.nulls(len(col), _L)
    elif pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_decimal(t):
        text = pc.cast(col, _L)
    elif pa.types.is_duration(t):
        text = pc.cast(pc.cast(col, pa.int64()), _L)
    elif pa.types.is_floating(t):
        text = pc.if_else(pc.is_finite(col), pc.cast(col, _L), pa.scalar(None, _L))
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        text = _quote(_escape(pc.cast(col, _L)))
    elif pa.types.is_timestamp(t):
        if t.tz is not None:
            col = col.cast(pa.timestamp(t.unit, "UTC"))
        iso = pc.replace_substring(pc.cast(col, _L), " ", "T", max_replacements=1)
        text = _quote(iso)
    elif pa.types.is_date(t) or pa.types.is_time(t):
        text = _quote(pc.cast(col, _L))
    else:  # nested, binary, ...: per-value Python, this column only
        encode = msgspec.json.encode
        text = pa.array([encode(v).decode() for v in col.to_pylist()], _L)
    return pc.fill_null(text, pa.scalar("null", _L))


def _escape(s: pa.Array) -> pa.Array:
    s = pc.replace_substring(s, "\\", "\\\\")
    s = pc.replace_substring(s, '"', '\\"')
    if pc.any(pc.match_substring_regex(s, "[\\x00-\\x1f]")).as_py():
        for code in range(0x20):
            s = pc.replace_substring(s, chr(code), _ESCAPES.get(code, f"\\u{code:04x}"))
    return s


def _quote(s: pa.Array) -> pa.Array:
    quote = pa.scalar('"', _L)
    return pc.binary_join_element_wise(quote, s, quote, pa.scalar("", _L))


