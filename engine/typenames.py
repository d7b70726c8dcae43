"""Type names: the one vocabulary for every schema a user writes (files, push, UDFs, casts).

``parse_type(name)`` accepts, case-insensitively:

* SQL-ish names (also what ``cast(x as T)`` takes, ``CAST_TYPES``): ``int8``/``tinyint``,
  ``int16``/``smallint``, ``int32``/``int``/``integer``, ``int64``/``bigint``,
  ``uint8``..``uint64``, ``float32``/``real``/``float``, ``float64``/``double``,
  ``bool``/``boolean``, ``string``/``varchar``/``text``, ``date``/``date32``,
  ``timestamp`` (milliseconds, no time zone);
* timestamps with a unit and an optional zone: ``timestamp[ms]``, ``timestamp[us, tz=UTC]``,
  ``timestamp_ns``, ``timestamp(s)``;
* decimals: ``decimal(p, s)`` (128-bit), ``decimal128(p, s)``, ``decimal256(p, s)``;
* every name ``pyarrow.type_for_alias`` knows (``large_string``, ``binary``, ``date64``,
  ``time32[ms]``, ``duration[s]``, ...).

``parse_schema({column: name, ...})`` builds a schema in the table's order. Every error is
a ``ConfigError`` naming ``where`` (the option's key path) and the bad name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from engine.errors import ConfigError

CAST_TYPES: dict[str, pa.DataType] = {
    "int8": pa.int8(), "tinyint": pa.int8(),
    "int16": pa.int16(), "smallint": pa.int16(),
    "int32": pa.int32(), "int": pa.int32(), "integer": pa.int32(),
    "int64": pa.int64(), "bigint": pa.int64(),
    "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(), "uint64": pa.uint64(),
    "float32": pa.float32(), "real": pa.float32(), "float": pa.float32(),
    "float64": pa.float64(), "double": pa.float64(),
    "bool": pa.bool_(), "boolean": pa.bool_(),
    "string": pa.string(), "varchar": pa.string(), "text": pa.string(),
    "timestamp": pa.timestamp("ms"),
    "date32": pa.date32(), "date": pa.date32(),
}  # fmt: skip

_UNITS = ("s", "ms", "us", "ns")
_TIMESTAMP = re.compile(
    r"^timestamp\s*[\[(]\s*(s|ms|us|ns)\s*(?:,\s*(?:tz\s*=\s*)?([^\])]+))?[\])]$", re.I
)
_TIMESTAMP_UNIT = re.compile(r"^timestamp_(s|ms|us|ns)$")
_DECIMAL = re.compile(
    r"^(decimal|decimal128|decimal256|numeric)\s*\(\s*(\d+)\s*(?:,\s*(-?\d+)\s*)?\)$"
)


def parse_type(name: Any, where: str) -> pa.DataType:
    """The Arrow type a type name means (see the module docstring)."""
    if not isinstance(name, str):
        raise ConfigError(f'{where}={name!r} must be a type name such as "int64"')
    text = name.strip()
    low = text.lower()
    if low in CAST_TYPES:
        return CAST_TYPES[low]
    if m := _TIMESTAMP_UNIT.match(low):
        return pa.timestamp(m.group(1))
    if m := _TIMESTAMP.match(text):
        zone = m.group(2).strip().strip("'\"") if m.group(2) else None
        try:
            return pa.timestamp(m.group(1).lower(), tz=zone)
        except (pa.ArrowInvalid, ValueError) as exc:
            raise ConfigError(f"{where}: unknown time zone {zone!r} in {name!r}") from exc
    if m := _DECIMAL.match(low):
        precision, scale = int(m.group(2)), int(m.group(3) or 0)
        wide = m.group(1) == "decimal256" or precision > 38
        try:
            return (pa.decimal256 if wide else pa.decimal128)(precision, scale)
        except (pa.ArrowInvalid, ValueError) as exc:
            raise ConfigError(f"{where}: {name!r}: {exc}") from exc
    try:
        return pa.type_for_alias(low)
    except (ValueError, KeyError):
        pass
    raise ConfigError(
        f"{where}: unknown type {name!r} (types: {', '.join(sorted(CAST_TYPES))}, "
        "timestamp[unit, tz=zone], decimal(p, s), or any pyarrow type alias)"
    )


def parse_schema(table: Any, where: str = "schema") -> pa.Schema:
    """A schema from ``{column: type name}`` in the table's order (a ``pa.Schema`` as it is)."""
    if isinstance(table, pa.Schema):
        return table
    if not isinstance(table, Mapping) or not table:
        raise ConfigError(
            f'{where}={table!r} must be a table of column = "type" '
            '(e.g. { symbol = "string", price = "float64" })'
        )
    return pa.schema([(str(col), parse_type(t, f"{where}.{col}")) for col, t in table.items()])


def type_name(t: pa.DataType) -> str:
    """A name ``parse_type`` reads back as ``t`` (for messages and generated files)."""
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}, tz={t.tz}]" if t.tz else f"timestamp[{t.unit}]"
    if pa.types.is_decimal(t):
        return f"decimal({t.precision}, {t.scale})"
    return str(t)


KEY_TYPES = (
    "integers, strings, binaries, booleans, timestamps, dates, times, durations, decimals "
    "or floats"
)


def is_key_type(t: pa.DataType) -> bool:
    """Whether rows can be grouped, joined and partitioned by a column of type ``t``."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return (
        pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_floating(t)
        or pa.types.is_decimal(t) or pa.types.is_null(t)
        or (pa.types.is_temporal(t) and not pa.types.is_interval(t))
        or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
        or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
        or pa.types.is_string_view(t) or pa.types.is_binary_view(t)
    )  # fmt: skip
