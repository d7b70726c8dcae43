"""One vocabulary of type names for every schema a user writes."""

from __future__ import annotations

import pyarrow as pa
import pytest

from engine.errors import ConfigError
from engine.typenames import CAST_TYPES, parse_schema, parse_type, type_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("int", pa.int32()),
        ("BIGINT", pa.int64()),
        ("double", pa.float64()),
        ("text", pa.string()),
        ("timestamp", pa.timestamp("ms")),
        ("timestamp[us]", pa.timestamp("us")),
        ("Timestamp[NS]", pa.timestamp("ns")),
        ("timestamp[ms, tz=UTC]", pa.timestamp("ms", tz="UTC")),
        ("timestamp(s, Europe/Paris)", pa.timestamp("s", tz="Europe/Paris")),
        ("timestamp_us", pa.timestamp("us")),
        ("decimal(10, 2)", pa.decimal128(10, 2)),
        ("decimal(50, 4)", pa.decimal256(50, 4)),
        ("large_string", pa.large_string()),
        ("binary", pa.binary()),
        ("date", pa.date32()),
        ("date64", pa.date64()),
    ],
)
def test_typenames_accept_what_users_type(name: str, expected: pa.DataType) -> None:
    assert parse_type(name, "x") == expected


@pytest.mark.parametrize(
    "t", [*set(CAST_TYPES.values()), pa.timestamp("us", "UTC"), pa.decimal128(9, 3)]
)
def test_typenames_type_name_reads_back(t: pa.DataType) -> None:
    assert parse_type(type_name(t), "x") == t


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("money", "schema.a: unknown type 'money'"),
        (3, "schema.a=3 must be a type name"),
    ],
)
def test_typenames_bad_name_names_the_key(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_schema({"a": value}, "schema")


def test_typenames_schema_keeps_the_table_order() -> None:
    got = parse_schema({"b": "string", "a": "timestamp[ms]"}, "schema")
    assert got == pa.schema([("b", pa.string()), ("a", pa.timestamp("ms"))])
    with pytest.raises(ConfigError, match="must be a table"):
        parse_schema({}, "schema")
