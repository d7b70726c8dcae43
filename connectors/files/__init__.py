"""Files as a source (``source.FilesSource``) and as a sink (``sink.FilesSink``).

Formats: ``csv``, ``jsonl`` (JSON lines) and ``parquet``. This module holds
what both sides share: format names by file extension. Schemas are written as
TOML tables of type names (``schema = { ts = "timestamp", name = "string" }``),
in the one vocabulary of ``engine.typenames``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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


def same_columns(a: pa.Schema, b: pa.Schema) -> bool:
    """Same names and types in the same order (nullability and metadata are not compared)."""
    return a.names == b.names and all(x.type == y.type for x, y in zip(a, b, strict=True))
