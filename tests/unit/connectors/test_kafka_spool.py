"""The Kafka sink's spool: sealed epochs read back whole, damage refused by name, cleanup.

No broker: the spool is local files (``connectors.kafka.spool``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from connectors.kafka.encode import RECORDS
from connectors.kafka.spool import Spool
from engine.errors import CorruptCheckpointError


def records(start: int, n: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "value": [f'{{"id": {i}}}'.encode() for i in range(start, start + n)],
            "key": [str(i % 3).encode() for i in range(start, start + n)],
            "partition": [i % 3 for i in range(start, start + n)],
            "timestamp": [None] * n,
            "headers": [None] * n,
        },
        RECORDS,
    )


def ids(batches) -> list[int]:  # type: ignore[no-untyped-def]
    return [int(v[7:-1]) for b in batches for v in b.column(0).to_pylist()]


def test_a_sealed_epoch_reads_back_whole_and_in_order(tmp_path: Path) -> None:
    s = Spool(tmp_path / "spool", "sinks.out")
    assert s.seal(1) is None  # nothing written: no file, no committable record
    s.write(1, records(0, 10))
    s.write(1, records(10, 0))
    s.write(1, records(10, 5))
    sealed = s.seal(1)
    assert sealed == {"path": str(tmp_path / "spool" / f"epoch-{1:020d}.arrow"),
                      "records": 15, "bytes": sealed["bytes"]}  # fmt: skip
    assert ids(s.read(sealed, 1)) == list(range(15))
    assert oct(os.stat(tmp_path / "spool").st_mode & 0o777) == "0o700"
    s.close()
    again = Spool(tmp_path / "spool", "sinks.out")  # a restarted process reads it too
    assert ids(again.read(sealed, 1)) == list(range(15))


def test_a_moved_checkpoint_directory_is_found_by_file_name(tmp_path: Path) -> None:
    s = Spool(tmp_path / "a", "sinks.out")
    s.write(3, records(0, 4))
    sealed = s.seal(3)
    assert sealed is not None
    (tmp_path / "a").rename(tmp_path / "b")
    assert ids(Spool(tmp_path / "b", "sinks.out").read(sealed, 3)) == [0, 1, 2, 3]


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "fewer"])
def test_damaged_staged_records_are_refused_naming_the_file(tmp_path: Path, damage: str) -> None:
    s = Spool(tmp_path, "sinks.out")
    s.write(2, records(0, 1000))
    sealed = s.seal(2)
    assert sealed is not None
    path = Path(sealed["path"])
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        os.truncate(path, path.stat().st_size // 2)
    elif damage == "garbage":
        path.write_bytes(b"not arrow at all" * 100)
    else:  # a complete file of another epoch put in its place
        s.write(9, records(0, 10))
        os.replace(s.seal(9)["path"], path)  # type: ignore[index]
    with pytest.raises(CorruptCheckpointError, match=f"sinks.out: epoch 2's staged records {path}"):
        list(s.read(sealed, 2))


def test_drop_removes_committed_and_rolled_back_epochs_and_dead_writers_files(
    tmp_path: Path,
) -> None:
    s = Spool(tmp_path, "sinks.out")
    for e in (1, 2, 3, 4):
        s.write(e, records(e * 10, 2))
        s.seal(e)
    dead = tmp_path / f"epoch-{7:020d}.arrow.tmp-999999999"
    dead.write_bytes(b"half a file of a killed process")
    s.write(5, records(0, 2))  # open: kept until rolled back
    s.drop(upto=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"epoch-{3:020d}.arrow", f"epoch-{4:020d}.arrow",
                     f"epoch-{5:020d}.arrow.tmp-{os.getpid()}"]  # fmt: skip
    s.drop(since=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"epoch-{3:020d}.arrow"]
    assert s.seal(5) is None  # the open epoch was rolled back with its file
    (tmp_path / "unrelated.txt").write_text("not ours")
    s.drop(upto=10)
    assert [p.name for p in tmp_path.iterdir()] == ["unrelated.txt"]


def test_an_epoch_restarted_in_a_new_process_replaces_the_old_temp_file(tmp_path: Path) -> None:
    s = Spool(tmp_path, "sinks.out")
    s.write(1, records(0, 5))
    s.write(2, records(100, 3))  # epoch 1 never sealed (rolled back by the runner): abandoned
    assert ids(s.read(s.seal(2), 2)) == [100, 101, 102]  # type: ignore[arg-type]
    assert s.seal(1) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"epoch-{2:020d}.arrow"]


def test_a_dead_processs_temporary_spool_is_removed_by_the_next(tmp_path: Path) -> None:
    """Without a checkpoint directory the spool is temporary; kill -9 leaves it behind,
    and the next sink process's start removes it (not a live process's)."""
    import subprocess
    import sys

    from connectors.kafka.spool import temporary_dir

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    code = "from connectors.kafka.spool import temporary_dir; print(temporary_dir())"
    root = str(Path(__file__).resolve().parents[3])
    dead = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    assert Path(dead).is_dir() and Path(dead).parent == tmp_path
    live = tmp_path / f"rs-kafka-spool-{os.getppid()}-x"  # a live process's: kept
    live.mkdir()
    import tempfile

    old = tempfile.tempdir
    tempfile.tempdir = str(tmp_path)
    try:
        mine = temporary_dir()
    finally:
        tempfile.tempdir = old
    assert not Path(dead).exists() and live.is_dir() and Path(mine).is_dir()
