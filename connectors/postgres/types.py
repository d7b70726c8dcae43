"""Arrow types as PostgreSQL column types, and table names made safe to put in SQL."""

from __future__ import annotations

import re

import pyarrow as pa

from engine.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def pg_type(t: pa.DataType) -> str | None:
    """The PostgreSQL type that holds every value of ``t`` exactly, or None."""
    if pa.types.is_dictionary(t):
        return pg_type(t.value_type)
    simple = {
        pa.int8(): "smallint", pa.int16(): "smallint", pa.int32(): "integer",
        pa.int64(): "bigint", pa.uint8(): "smallint", pa.uint16(): "integer",
        pa.uint32(): "bigint", pa.uint64(): "numeric(20, 0)", pa.float16(): "real",
        pa.float32(): "real", pa.float64(): "double precision", pa.bool_(): "boolean",
        pa.string(): "text", pa.large_string(): "text", pa.string_view(): "text",
        pa.binary(): "bytea", pa.large_binary(): "bytea", pa.date32(): "date",
        pa.date64(): "date",
    }  # fmt: skip
    if t in simple:
        return simple[t]
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_time(t):
        return "time"
    if pa.types.is_duration(t):
        return "interval"
    if pa.types.is_decimal(t) and t.precision <= 1000:
        return f"numeric({t.precision}, {t.scale})"
    if pa.types.is_fixed_size_binary(t):
        return "bytea"
    return None


def column_sql(field: pa.Field, where: str, nullable: bool | None = None) -> str:
    """``"name" type [NOT NULL]`` for a CREATE TABLE; a type without a mapping is refused."""
    t = pg_type(field.type)
    if t is None:
        raise ConfigError(
            f"{where}: column {field.name!r} has type {field.type}, which has no PostgreSQL "
            "column type here (cast it in a project step)"
        )
    null = field.nullable if nullable is None else nullable
    name = field.name.replace('"', '""')
    return f'"{name}" {t}' + ("" if null else " NOT NULL")


def quote_table(name: str, where: str) -> str:
    """``schema.table`` or ``table`` as quoted SQL; anything else is refused."""
    parts = name.split(".")
    if len(parts) > 2 or not all(_NAME.match(p) for p in parts):
        raise ConfigError(
            f"{where} = {name!r}: a table name is `table` or `schema.table` (letters, digits, _)"
        )
    return ".".join(f'"{p}"' for p in parts)
