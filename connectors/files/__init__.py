"""Files as a source (``source.FilesSource``) and as a sink (``sink.FilesSink``).

Formats: ``csv``, ``jsonl`` (JSON lines) and ``parquet``. This module holds
what both sides share: format names by file extension and schemas written as
TOML tables of type names (``schema = { ts = "int64", name = "string" }``;
every ``pyarrow.type_for_alias`` name — ``int64``, ``double``, ``string``,
``bool``, ``date32``, ``timestamp[ms]`` — plus ``timestamp[ms, tz=UTC]``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from engine.errors import ConfigError

Format = Literal["csv", "jsonl", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "jsonl", "parquet")
EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_TIMESTAMP_TZ = re.compile(r"^timestamp\[(s|ms|us|ns),\s*tz=([^\]]+)\]$")


def format_of(path: str | Path, explicit: str | None = None) -> Format:
    """``explicit`` if given (checked), else the format the file extension says."""
    if explicit is not None:
        if explicit not in FORMATS:
            raise ConfigError(f"format={explicit!r} is not one of {', '.join(FORMATS)}")
        return explicit  # type: ignore[return-value]
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise ConfigError(
            f"cannot tell the format of {str(path)!r} from its extension {suffix!r}; "
            f"set format = one of {', '.join(FORMATS)}"
        )
    return EXTENSIONS[suffix]


def parse_type(name: str, where: str) -> pa.DataType:
    """The Arrow type for a type name; ``where`` names the option in errors."""
    if not isinstance(name, str):
        raise ConfigError(f"{where}={name!r} must be a type name string such as 'int64'")
    text = name.strip()
    if m := _TIMESTAMP_TZ.match(text):
        return pa.timestamp(m.group(1), tz=m.group(2).strip())
    try:
        return pa.type_for_alias(text)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{where}={name!r} is not an Arrow type name") from exc


def parse_schema(table: Any, where: str = "schema") -> pa.Schema:
    """A schema from ``{column: type name}`` (in the table's order); the schema as is."""
    if isinstance(table, pa.Schema):
        return table
    if not isinstance(table, dict) or not table:
        raise ConfigError(f'{where}={table!r} must be a table of column = "type"')
    return pa.schema([(str(col), parse_type(t, f"{where}.{col}")) for col, t in table.items()])


def same_columns(a: pa.Schema, b: pa.Schema) -> bool:
    """Same names and types in the same order (nullability and metadata are not compared)."""
    return a.names == b.names and all(x.type == y.type for x, y in zip(a, b, strict=True))
