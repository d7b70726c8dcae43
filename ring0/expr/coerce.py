"""Type rules: kinds of Arrow types and the common type of several (cast names: engine.typenames).

Kinds: ``null`` (the type of the literal ``null``), ``int`` (int8..uint64),
``float`` (float16..float64), ``string`` (string, large_string), ``bool``,
``timestamp`` (any unit, with or without a time zone), ``date`` (date32,
date64) and ``other`` (lists, structs, decimals, dictionaries: they can be
projected and tested with ``is null``, nothing else).

Common type (comparisons, ``in``, ``between``, ``case``/``if``/``coalesce``,
``greatest``/``least``): nulls take the other type; equal types stay; ints
widen to int64; any float with numbers to float64; string with large_string to
large_string; timestamps of one time zone to the finest unit, a date with
timestamps to that timestamp. Anything else (string with number, bool with
number, timestamps of different zones) has no common type.
"""

from __future__ import annotations

import pyarrow as pa

_UNIT_RANK = {"s": 0, "ms": 1, "us": 2, "ns": 3}
UNIT_PER_MS = {"ms": 1, "us": 1_000, "ns": 1_000_000}  # ticks of a unit in one millisecond


def kind(t: pa.DataType) -> str:
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    return "other"


def is_numeric(t: pa.DataType) -> bool:
    return kind(t) in ("int", "float")


def arithmetic_type(*types: pa.DataType) -> pa.DataType:
    """Result type of ``+ - * // %`` on numbers (and nulls): int64 unless a float is involved."""
    return pa.float64() if any(kind(t) == "float" for t in types) else pa.int64()


def common_type(types: list[pa.DataType]) -> pa.DataType | None:
    """The type every one of ``types`` converts to without loss of meaning, or None."""
    known = [t for t in types if kind(t) != "null"]
    if not known:
        return pa.null()
    first = known[0]
    if all(t == first for t in known):
        return first
    kinds = {kind(t) for t in known}
    if kinds <= {"int", "float"}:
        return arithmetic_type(*known)
    if kinds == {"string"}:
        return (
            pa.large_string() if any(pa.types.is_large_string(t) for t in known) else (pa.string())
        )
    if kinds <= {"timestamp", "date"}:
        stamps = [t for t in known if kind(t) == "timestamp"]
        if not stamps:
            return pa.date32()
        zones = {t.tz for t in stamps}
        if len(zones) > 1:
            return None
        unit = max((t.unit for t in stamps), key=_UNIT_RANK.__getitem__)
        return pa.timestamp(unit, tz=zones.pop())
    return None
