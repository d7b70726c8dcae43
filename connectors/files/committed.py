"""Reading what a files sink committed: every visible file, in (epoch, instance) order."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq


def read_committed(path: str | Path, schema: pa.Schema | None = None) -> pa.Table:
    """Every committed file under ``path`` (not ``.staging``), in (epoch, instance) order.

    ``schema`` types the JSON lines files (their values are otherwise inferred)
    and is the schema of the empty result when nothing is committed.
    """
    root = Path(path)
    files = [
        p
        for p in root.iterdir()
        if p.is_file() and p.name[0] not in "._" and p.suffix in (".parquet", ".jsonl")
    ]
    files.sort(key=_commit_order)
    tables: list[pa.Table] = []
    for p in files:
        if p.suffix == ".parquet":
            tables.append(pq.read_table(p, schema=schema))
        else:
            options = pa_json.ParseOptions(explicit_schema=schema) if schema else None
            tables.append(pa_json.read_json(p, parse_options=options))
    if not tables:
        return (schema or pa.schema([])).empty_table()
    return pa.concat_tables(tables)


def _commit_order(p: Path) -> tuple[int, int, str]:
    m = re.match(r"^.*-(\d+)-(\d+)\.[a-z]+$", p.name)
    return (int(m.group(1)), int(m.group(2)), p.name) if m else (-1, -1, p.name)
