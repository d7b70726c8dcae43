"""Files source: CSV, JSON lines and Parquet, in name order, followed, replayable."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from connectors.base import ConnectorConfig, SourceCheckpoint
from connectors.files.source import FilesSource
from connectors.testing import check_source
from engine.errors import CheckpointError, ConfigError, ConnectorError, SchemaMismatchError

FORMATS = ["csv", "jsonl", "parquet"]


def table(start: int, n: int) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "name": [f"n{i}" for i in ids],
            "v": pa.array([i / 4 for i in ids], pa.float64()),
        }
    )


def write(path: Path, t: pa.Table, fmt: str | None = None) -> Path:
    fmt = fmt or path.suffix.lstrip(".")
    tmp = path.with_name("." + path.name)  # written under a dot-name, renamed when complete
    if fmt == "csv":
        pacsv.write_csv(t, tmp)
    elif fmt == "parquet":
        pq.write_table(t, tmp, row_group_size=100)
    else:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in t.to_pylist()))
    os.replace(tmp, path)
    return path


def open_source(path: Path, **options: object) -> FilesSource:
    src = FilesSource()
    src.open(ConnectorConfig("files", {"path": str(path), **options}))
    return src


def drain(src: FilesSource, max_records: int = 1 << 30) -> pa.Table:
    batches = []
    while (b := src.poll_batch(max_records)) is not None:
        batches.append(b.batch)
    return pa.Table.from_batches(batches, schema=src.schema())


def make_dir(tmp_path: Path, fmt: str, files: int = 3, rows: int = 250) -> Path:
    for k in range(files):
        write(tmp_path / f"part-{k}.{fmt}", table(k * rows, rows))
    return tmp_path


@pytest.mark.parametrize("fmt", FORMATS)
def test_files_directory_read_in_name_order_with_inferred_schema(tmp_path: Path, fmt: str) -> None:
    write(tmp_path / f"b.{fmt}", table(100, 50))
    write(tmp_path / f"a.{fmt}", table(0, 100))
    src = open_source(tmp_path)
    got = drain(src, max_records=30)
    assert src.schema().names == ["id", "name", "v"]
    assert src.schema().field("id").type == pa.int64()
    assert got.equals(table(0, 150)) and src.finished()
    src.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_files_batches_respect_batch_rows_and_max_records(tmp_path: Path, fmt: str) -> None:
    src = open_source(make_dir(tmp_path, fmt, files=1, rows=250), batch_rows=64)
    sizes = [b.batch.num_rows for b in iter(lambda: src.poll_batch(1000), None)]
    assert max(sizes) <= 64 and sum(sizes) == 250
    src.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_files_later_file_with_other_columns_rejected_naming_it(tmp_path: Path, fmt: str) -> None:
    write(tmp_path / f"a.{fmt}", table(0, 10))
    write(tmp_path / f"b.{fmt}", table(0, 10).rename_columns(["id", "label", "v"]))
    src = open_source(tmp_path)
    assert src.poll_batch(100) is not None
    with pytest.raises(SchemaMismatchError, match=rf"b\.{fmt}"):
        src.poll_batch(100)
    src.close()


def test_files_parquet_with_other_types_rejected(tmp_path: Path) -> None:
    write(tmp_path / "a.parquet", table(0, 10))
    write(
        tmp_path / "b.parquet",
        table(0, 10).cast(
            pa.schema([("id", pa.int32()), ("name", pa.string()), ("v", pa.float64())])
        ),
    )
    src = open_source(tmp_path)
    src.poll_batch(100)
    with pytest.raises(SchemaMismatchError, match="id: int32"):
        src.poll_batch(100)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_files_declared_schema_converts_values(tmp_path: Path, fmt: str) -> None:
    write(tmp_path / f"a.{fmt}", table(0, 5))
    src = open_source(tmp_path, schema={"id": "int32", "name": "string", "v": "float32"})
    got = drain(src)
    assert got.schema == pa.schema([("id", pa.int32()), ("name", pa.string()), ("v", pa.float32())])
    assert got.column("id").to_pylist() == [0, 1, 2, 3, 4]


def test_files_explicit_format_overrides_the_extension(tmp_path: Path) -> None:
    write(tmp_path / "data.txt", table(0, 7), fmt="csv")
    assert drain(open_source(tmp_path / "data.txt", format="csv")).equals(table(0, 7))


def test_files_unknown_extension_without_format_rejected(tmp_path: Path) -> None:
    write(tmp_path / "data.txt", table(0, 7), fmt="csv")
    with pytest.raises(ConfigError, match="cannot tell the format of .*data.txt"):
        open_source(tmp_path)


def test_files_hidden_and_underscore_names_and_pattern_skipped(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", table(0, 5))
    write(tmp_path / "b.parquet", table(5, 5))
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".c.csv.tmp").write_text("garbage")
    assert drain(open_source(tmp_path, pattern="*.csv")).equals(table(0, 5))


def test_files_recursive_pattern_reads_subdirectories(tmp_path: Path) -> None:
    (tmp_path / "day=1").mkdir()
    (tmp_path / "day=2").mkdir()
    write(tmp_path / "day=2" / "x.csv", table(5, 5))
    write(tmp_path / "day=1" / "x.csv", table(0, 5))
    assert drain(open_source(tmp_path, pattern="**/*.csv")).equals(table(0, 10))


def test_files_empty_directory_without_schema_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set schema"):
        open_source(tmp_path, follow=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"folow": True}, "unknown option 'folow'"),
        ({"format": "xml"}, "format='xml'"),
        ({"batch_rows": 0}, "batch_rows=0"),
        ({"follow": "yes"}, "follow='yes'"),
        # "int" is a type name now (int32: one vocabulary, engine.typenames)
        ({"schema": {"id": "integr"}}, "schema.id: unknown type 'integr'"),
    ],
)
def test_files_bad_options_rejected_naming_them(
    tmp_path: Path, options: dict, message: str
) -> None:
    write(tmp_path / "a.csv", table(0, 1))
    with pytest.raises(ConfigError, match=message):
        open_source(tmp_path, **options)


def test_files_missing_path_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_source(tmp_path / "nope")


def test_files_follow_picks_up_new_files_in_name_order(tmp_path: Path) -> None:
    write(tmp_path / "b.csv", table(0, 5))
    src = open_source(tmp_path, follow=True)
    assert drain(src).equals(table(0, 5))
    assert not src.finished()
    started = time.monotonic()
    assert src.data_ready(0.2) is False  # nothing new: waits the timeout, no longer
    assert 0.15 < time.monotonic() - started < 2.0
    write(tmp_path / "d.csv", table(10, 5))
    write(tmp_path / "a.csv", table(100, 5))  # sorts before a file already read: still read
    assert src.data_ready(5.0) is True
    assert drain(src).equals(pa.concat_tables([table(100, 5), table(10, 5)]))
    src.close()


def test_files_follow_data_ready_wakes_when_a_file_arrives(tmp_path: Path) -> None:
    schema = {"id": "int64", "name": "string", "v": "double"}
    src = open_source(tmp_path, follow=True, schema=schema)
    assert src.poll_batch(10) is None
    write(tmp_path / "a.jsonl", table(0, 3))
    assert src.data_ready(5.0)
    assert drain(src).equals(table(0, 3))


@pytest.mark.parametrize("fmt", FORMATS)
def test_files_restore_mid_file_continues_right_after(tmp_path: Path, fmt: str) -> None:
    make_dir(tmp_path, fmt, files=3, rows=250)
    src = open_source(tmp_path, batch_rows=64)
    first = drain_rows(src, 300)
    cp = src.checkpoint()
    assert cp.position == {"file": f"part-1.{fmt}", "row": 50, "done": [f"part-0.{fmt}"]}
    fresh = open_source(tmp_path, batch_rows=64)
    fresh.restore(SourceCheckpoint(json.loads(json.dumps(cp.position))))
    rest = drain(fresh, max_records=77)
    assert pa.concat_tables([first, rest]).equals(table(0, 750))


def drain_rows(src: FilesSource, rows: int) -> pa.Table:
    batches = []
    while rows:
        b = src.poll_batch(rows)
        assert b is not None
        batches.append(b.batch)
        rows -= b.batch.num_rows
    return pa.Table.from_batches(batches)


def test_files_restore_of_a_vanished_file_fails(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", table(0, 10))
    write(tmp_path / "b.csv", table(0, 10))
    src = open_source(tmp_path)
    src.restore(SourceCheckpoint({"file": "a.csv", "row": 5, "done": []}))
    (tmp_path / "a.csv").unlink()
    with pytest.raises(ConnectorError, match="a.csv was in the checkpoint but is gone"):
        src.restore(SourceCheckpoint({"file": "a.csv", "row": 5, "done": []}))


def test_files_instances_split_the_files_disjointly(tmp_path: Path) -> None:
    make_dir(tmp_path, "csv", files=8, rows=10)
    parts = []
    for j in range(3):
        src = FilesSource()
        src.open(ConnectorConfig("files", {"path": str(tmp_path)}, instance=j, instances=3))
        parts.append(drain(src))
    assert sum(p.num_rows for p in parts) == 80
    assert pa.concat_tables(parts).sort_by("id").equals(table(0, 80))


def test_files_single_file_path_is_bounded(tmp_path: Path) -> None:
    path = write(tmp_path / "one.parquet", table(0, 300))
    src = open_source(path, batch_rows=1000)
    assert drain(src).equals(table(0, 300)) and src.finished()
    with pytest.raises(ConfigError, match="follow=true needs a directory"):
        open_source(path, follow=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_files_passes_source_conformance(tmp_path: Path, fmt: str) -> None:
    make_dir(tmp_path, fmt, files=3, rows=300)
    config = ConnectorConfig("files", {"path": str(tmp_path), "batch_rows": 128})
    check_source(FilesSource, config, max_records=100)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_files_value_that_does_not_fit_the_schema_is_a_mismatch(tmp_path: Path, fmt: str) -> None:
    write(tmp_path / f"a.{fmt}", table(0, 5))
    bad = table(5, 2).set_column(0, "id", pa.array(["x", "y"]))
    write(tmp_path / f"b.{fmt}", bad)
    src = open_source(tmp_path)
    drain_rows(src, 5)
    with pytest.raises(SchemaMismatchError, match=rf"b\.{fmt}"):
        drain(src)


def test_files_parquet_restore_skips_whole_row_groups(tmp_path: Path) -> None:
    write(tmp_path / "a.parquet", table(0, 350))  # row groups of 100
    src = open_source(tmp_path)
    src.restore(SourceCheckpoint({"file": "a.parquet", "row": 250, "done": []}))
    assert drain(src, max_records=40).equals(table(250, 100))
    past_the_end = open_source(tmp_path)
    with pytest.raises(CheckpointError, match="fewer rows than the checkpoint"):
        past_the_end.restore(SourceCheckpoint({"file": "a.parquet", "row": 351, "done": []}))
