"""Every shipped connector passes the public conformance check (connectors/testing.py)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from connectors import registry
from connectors.base import ConnectorConfig
from connectors.files.sink import read_committed
from connectors.testing import check_sink, check_source

ROWS = pa.table({"ts": pa.array(range(0, 3000, 3), pa.int64()), "key": list(range(1000))})


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("generator", {"events": 20_000, "keys": 50, "batch_rows": 3000}),
        ("nexmark", {"kind": "bid", "events": 20_000, "batch_rows": 4096}),
        ("nexmark", {"kind": "auction", "events": 20_000, "batch_rows": 4096}),
        ("nexmark", {"kind": "person", "events": 20_000, "batch_rows": 4096}),
        ("scripted", {"script": [[{"ts": 1, "key": 2}], [{"ts": 3, "key": 4}], {"marker": "end"}]}),
    ],
)
def test_builtin_source_passes_conformance(name: str, options: dict) -> None:
    check_source(registry.resolve_source(name), ConnectorConfig(name, options))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_files_source_passes_conformance_for_each_format(tmp_path: Path, fmt: str) -> None:
    for i in range(3):
        part = ROWS.slice(i * 300, 300)
        path = tmp_path / f"part-{i}.{fmt}"
        if fmt == "csv":
            pacsv.write_csv(part, path)
        elif fmt == "parquet":
            pq.write_table(part, path)
        else:
            path.write_text("".join(f'{{"ts": {t}, "key": {k}}}\n' for t, k in
                                    zip(part["ts"].to_pylist(), part["key"].to_pylist(),
                                        strict=True)))  # fmt: skip
    config = ConnectorConfig("files", {"path": str(tmp_path), "format": fmt, "batch_rows": 128})
    check_source(registry.resolve_source("files"), config)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_files_sink_passes_conformance_exactly_once(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "out"
    config = ConnectorConfig("out", {"path": str(out), "format": fmt}, schema=ROWS.schema)
    batches = ROWS.to_batches(max_chunksize=200)
    check_sink(
        registry.resolve_sink("files"),
        config,
        batches,
        read_back=lambda _sink: read_committed(out, ROWS.schema) if fmt == "jsonl"
        else read_committed(out),
    )  # fmt: skip


@pytest.mark.parametrize("name", ["console", "collect"])
def test_builtin_sink_passes_conformance(tmp_path: Path, name: str) -> None:
    options = {"path": str(tmp_path / "c.jsonl")} if name == "collect" else {}
    config = ConnectorConfig(name, options, schema=ROWS.schema)
    check_sink(registry.resolve_sink(name), config, ROWS.to_batches(max_chunksize=250))
