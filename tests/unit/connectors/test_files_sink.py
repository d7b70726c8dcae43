"""FilesSink: staged rows are invisible until commit; commit is idempotent and restartable."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from connectors.base import ConnectorConfig
from connectors.files.sink import FilesSink, encode_jsonl, read_committed
from engine.errors import ConfigError, ConnectorError, SchemaMismatchError

SCHEMA = pa.schema([("ts", pa.int64()), ("key", pa.string()), ("value", pa.float64())])


def batch(start: int, n: int) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array(range(start, start + n), pa.int64()),
            pa.array([f"k{i % 3}" for i in range(start, start + n)]),
            pa.array([i / 2 for i in range(start, start + n)], pa.float64()),
        ],
        schema=SCHEMA,
    )


def sink(path: Path, instance: int = 0, instances: int = 1, **options: Any) -> FilesSink:
    s = FilesSink()
    s.open(
        ConnectorConfig("out", {"path": str(path), **options}, instance, instances, schema=SCHEMA)
    )
    return s


def run_epoch(s: FilesSink, epoch: int, *batches: pa.RecordBatch) -> dict[str, Any] | None:
    s.begin_epoch(epoch)
    for b in batches:
        s.write_batch(b)
    return s.pre_commit(epoch)


def visible(path: Path) -> list[int]:
    return read_committed(path, SCHEMA).column("ts").to_pylist()


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_files_sink_staged_rows_invisible_until_commit(tmp_path: Path, fmt: str) -> None:
    s = sink(tmp_path, format=fmt)
    committable = run_epoch(s, 1, batch(0, 5), batch(5, 3))
    assert committable == {"files": [f"part-0000000001-0.{fmt}"], "rows": 8}
    assert visible(tmp_path) == []
    assert (tmp_path / ".staging" / f"part-0000000001-0.{fmt}.staged").exists()
    s.commit_epoch(1, committable)
    assert visible(tmp_path) == list(range(8))
    assert list((tmp_path / ".staging").iterdir()) == []


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_files_sink_round_trips_rows_exactly(tmp_path: Path, fmt: str) -> None:
    s = sink(tmp_path, format=fmt)
    for epoch in (1, 2, 3):
        s.commit_epoch(epoch, run_epoch(s, epoch, batch(epoch * 10, 4)))
    assert read_committed(tmp_path, SCHEMA).equals(
        pa.Table.from_batches([batch(10, 4), batch(20, 4), batch(30, 4)])
    )


def test_files_sink_uncommitted_rows_invisible_to_pyarrow_dataset(tmp_path: Path) -> None:
    s = sink(tmp_path)
    s.commit_epoch(1, run_epoch(s, 1, batch(0, 2)))

    def dataset_ts() -> list[int]:
        return ds.dataset(tmp_path, format="parquet").to_table().column("ts").to_pylist()

    s.begin_epoch(2)
    s.write_batch(batch(2, 2))
    assert dataset_ts() == [0, 1]  # in progress
    committable = s.pre_commit(2)
    assert dataset_ts() == [0, 1]  # staged
    s.commit_epoch(2, committable)
    assert dataset_ts() == [0, 1, 2, 3]


def test_files_sink_recommit_is_idempotent(tmp_path: Path) -> None:
    s = sink(tmp_path)
    committable = run_epoch(s, 1, batch(0, 3))
    s.commit_epoch(1, committable)
    s.commit_epoch(1, committable)
    sink(tmp_path).commit_epoch(1, committable)
    assert visible(tmp_path) == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["part-0000000001-0.parquet"]


def test_files_sink_fresh_instance_commits_epoch_an_older_one_staged(tmp_path: Path) -> None:
    old = sink(tmp_path, format="jsonl")
    committable = run_epoch(old, 7, batch(0, 4))
    del old  # the old process "dies" after pre_commit, before commit
    new = sink(tmp_path, format="jsonl")
    new.commit_epoch(7, committable)
    new.rollback_epoch(8)
    assert visible(tmp_path) == [0, 1, 2, 3]


def test_files_sink_commit_without_committable_uses_what_is_staged(tmp_path: Path) -> None:
    run_epoch(sink(tmp_path), 3, batch(0, 2))
    sink(tmp_path).commit_epoch(3, None)
    assert visible(tmp_path) == [0, 1]


def test_files_sink_commit_also_commits_earlier_staged_epochs(tmp_path: Path) -> None:
    s = sink(tmp_path)
    run_epoch(s, 1, batch(0, 2))  # its commit was lost in a crash
    c2 = run_epoch(s, 2, batch(2, 2))
    c3 = run_epoch(s, 3, batch(4, 2))  # staged, manifest 3 not written
    sink(tmp_path).commit_epoch(2, c2)
    assert visible(tmp_path) == [0, 1, 2, 3]
    assert c3 is not None
    assert (tmp_path / ".staging" / (c3["files"][0] + ".staged")).exists()


def test_files_sink_rollback_removes_staged_and_in_progress_leftovers(tmp_path: Path) -> None:
    s = sink(tmp_path)
    s.commit_epoch(1, run_epoch(s, 1, batch(0, 1)))
    run_epoch(s, 2, batch(1, 1))
    s.begin_epoch(3)
    s.write_batch(batch(2, 1))  # in progress when the process "dies"
    other = sink(tmp_path, instance=1, instances=2)
    run_epoch(other, 2, batch(10, 1))
    fresh = sink(tmp_path, instance=0, instances=2)
    fresh.commit_epoch(1, None)
    fresh.rollback_epoch(2)
    left = sorted(p.name for p in (tmp_path / ".staging").iterdir())
    assert left == ["part-0000000002-1.parquet.staged"]  # instance 1's is its own business
    assert visible(tmp_path) == [0]


def test_files_sink_rollback_by_instance_zero_removes_files_of_vanished_instances(
    tmp_path: Path,
) -> None:
    run_epoch(sink(tmp_path, instance=3, instances=4), 5, batch(0, 1))
    sink(tmp_path, instance=0, instances=2).rollback_epoch(5)
    assert list((tmp_path / ".staging").iterdir()) == []


def test_files_sink_rollback_of_open_epoch_discards_its_writer(tmp_path: Path) -> None:
    s = sink(tmp_path)
    s.begin_epoch(4)
    s.write_batch(batch(0, 3))
    s.rollback_epoch(4)
    assert list((tmp_path / ".staging").iterdir()) == []
    with pytest.raises(ConnectorError, match="before begin_epoch"):
        s.write_batch(batch(0, 1))


def test_files_sink_empty_epoch_commits_no_file(tmp_path: Path) -> None:
    s = sink(tmp_path)
    committable = run_epoch(s, 1, batch(0, 0))
    assert committable == {"files": [], "rows": 0}
    s.commit_epoch(1, committable)
    assert [p.name for p in tmp_path.iterdir()] == [".staging"]


def test_files_sink_commit_of_lost_staged_file_raises(tmp_path: Path) -> None:
    s = sink(tmp_path)
    committable = run_epoch(s, 1, batch(0, 1))
    assert committable is not None
    (tmp_path / ".staging" / (committable["files"][0] + ".staged")).unlink()
    with pytest.raises(ConnectorError, match="cannot commit epoch 1"):
        s.commit_epoch(1, committable)


def test_files_sink_close_drops_unstaged_epoch_keeps_staged(tmp_path: Path) -> None:
    s = sink(tmp_path)
    run_epoch(s, 1, batch(0, 1))
    s.begin_epoch(2)
    s.write_batch(batch(1, 1))
    s.close()
    assert [p.name for p in (tmp_path / ".staging").iterdir()] == [
        "part-0000000001-0.parquet.staged"
    ]


def test_files_sink_schema_mismatch_raises(tmp_path: Path) -> None:
    s = sink(tmp_path)
    s.begin_epoch(1)
    with pytest.raises(SchemaMismatchError, match="differs"):
        s.write_batch(pa.record_batch({"x": [1]}))


def test_files_sink_pre_commit_of_other_epoch_raises(tmp_path: Path) -> None:
    s = sink(tmp_path)
    s.begin_epoch(1)
    with pytest.raises(ConnectorError, match=r"pre_commit\(2\) but the open epoch is 1"):
        s.pre_commit(2)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"format": "csv"}, "format='csv'"),
        ({"prefix": ".hidden"}, "prefix='.hidden'"),
        ({"colour": "red"}, "unknown option"),
    ],
)
def test_files_sink_bad_options_raise_config_error(
    tmp_path: Path, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        sink(tmp_path, **options)


def test_files_sink_without_path_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="'path'"):
        FilesSink().open(ConnectorConfig("out", {}))


def test_files_sink_capabilities_are_exactly_once_two_phase(tmp_path: Path) -> None:
    caps = sink(tmp_path).capabilities()
    assert caps.exactly_once and caps.idempotent and caps.two_phase_commit


def test_files_sink_custom_prefix_names_files(tmp_path: Path) -> None:
    s = sink(tmp_path, prefix="trades", instance=2, instances=3)
    s.commit_epoch(12, run_epoch(s, 12, batch(0, 1)))
    assert (tmp_path / "trades-0000000012-2.parquet").exists()


def test_jsonl_encoding_escapes_and_types_values_like_json() -> None:
    b = pa.record_batch(
        {
            "i": pa.array([1, None], pa.int32()),
            "f": [float("nan"), -2.5],
            "s": ['quote " back \\ nl \n ctl \x01', None],
            "t": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5, 6000), None], pa.timestamp("ms")),
            "z": pa.array([0, None], pa.timestamp("s", tz="Europe/Paris")),
            "b": [True, None],
            "l": [[1, 2], None],
            "d": pa.array(["x", "y"]).dictionary_encode(),
        }
    )
    rows = [json.loads(line) for line in bytes(encode_jsonl(b)).decode().splitlines()]
    assert rows == [
        {
            "i": 1,
            "f": None,
            "s": 'quote " back \\ nl \n ctl \x01',
            "t": "2024-01-02T03:04:05.006",
            "z": "1970-01-01T00:00:00Z",
            "b": True,
            "l": [1, 2],
            "d": "x",
        },
        {"i": None, "f": -2.5, "s": None, "t": None, "z": None, "b": None, "l": None, "d": "y"},
    ]


def test_jsonl_encoding_of_sliced_batch_writes_only_its_rows() -> None:
    b = pa.record_batch({"x": [1, 2, 3, 4]}).slice(1, 2)
    assert bytes(encode_jsonl(b)) == b'{"x":2}\n{"x":3}\n'


def test_files_sink_rollback_over_committed_files_of_another_run_raises(tmp_path: Path) -> None:
    s = sink(tmp_path)
    s.commit_epoch(1, run_epoch(s, 1, batch(0, 2)))
    s.commit_epoch(2, run_epoch(s, 2, batch(2, 2)))
    with pytest.raises(ConnectorError, match=r"holds committed files of epoch >= 2 \(part-0+2-0"):
        sink(tmp_path).rollback_epoch(2)
    sink(tmp_path, instance=1, instances=2).rollback_epoch(1)  # not its files


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_files_sink_epoch_replayed_with_same_rows_commits_once(tmp_path: Path, fmt: str) -> None:
    first = sink(tmp_path, format=fmt)
    first.commit_epoch(1, run_epoch(first, 1, batch(0, 3)))
    again = sink(tmp_path, format=fmt)
    again.commit_epoch(1, run_epoch(again, 1, batch(0, 3)))
    assert visible(tmp_path) == [0, 1, 2]
    assert list((tmp_path / ".staging").iterdir()) == []


def test_files_sink_epoch_replayed_with_other_rows_raises(tmp_path: Path) -> None:
    first = sink(tmp_path)
    first.commit_epoch(1, run_epoch(first, 1, batch(0, 3)))
    again = sink(tmp_path)
    committable = run_epoch(again, 1, batch(100, 3))
    with pytest.raises(ConnectorError, match="already committed with other rows"):
        again.commit_epoch(1, committable)
    assert visible(tmp_path) == [0, 1, 2]
