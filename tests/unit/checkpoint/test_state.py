"""State files: several named tables round trip; damage is detected before parsing."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from engine.checkpoint.state import is_temp, read_state, verify_state, write_state
from engine.errors import CorruptCheckpointError


def tables() -> dict[str, pa.Table]:
    ints = pa.table({"k": pa.array([1, 2, 3], pa.int64()), "n": pa.array([4, None, 6], pa.int32())})
    strings = pa.table({"s": ["a", "", None, "ünïcode" * 100]})
    stamps = pa.table(
        {
            "ts": pa.array([0, 1_700_000_000_123], pa.timestamp("ms")),
            "tz": pa.array([1, 2], pa.timestamp("us", tz="UTC")),
        }
    )
    empty = pa.schema([("w", pa.int64()), ("v", pa.float64())]).empty_table()
    scalar = pa.table({"watermark": [42]}).replace_schema_metadata({"version": "3"})
    chunked = pa.concat_tables([ints, ints])
    return {
        "op0/ints": ints,
        "op0/strings": strings,
        "op1/stamps": stamps,
        "op1/empty": empty,
        "scalar": scalar,
        "chunked": chunked,
    }


def test_state_round_trip_of_several_tables_is_exact(tmp_path: Path) -> None:
    written = write_state(tmp_path / "w.state", tables())
    assert written.bytes == (tmp_path / "w.state").stat().st_size
    assert written.checksum.startswith("sha256:")
    got = read_state(tmp_path / "w.state", written.checksum, written.bytes)
    want = tables()
    assert list(got) == list(want)
    for name, table in want.items():
        assert got[name].equals(table), name
        assert got[name].schema.equals(table.schema, check_metadata=True), name
    assert got["op1/empty"].num_rows == 0
    assert got["scalar"].schema.metadata == {b"version": b"3"}


def test_state_with_no_tables_round_trips_to_empty_dict(tmp_path: Path) -> None:
    written = write_state(tmp_path / "w.state", {})
    assert read_state(tmp_path / "w.state", written.checksum) == {}


def test_state_write_leaves_no_temp_file(tmp_path: Path) -> None:
    write_state(tmp_path / "w.state", tables())
    assert [p.name for p in tmp_path.iterdir()] == ["w.state"]


def test_state_bit_flip_raises_checksum_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "w.state"
    written = write_state(path, tables())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="w.state: checksum mismatch"):
        read_state(path, written.checksum)


def test_state_truncated_raises_size_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "w.state"
    written = write_state(path, tables())
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(CorruptCheckpointError, match="bytes, the manifest records"):
        verify_state(path, written.checksum, written.bytes)


def test_state_missing_file_raises_corrupt_naming_it(tmp_path: Path) -> None:
    with pytest.raises(CorruptCheckpointError, match="nope.state: missing"):
        read_state(tmp_path / "nope.state", "sha256:00")


def test_state_unknown_checksum_algorithm_raises_corrupt(tmp_path: Path) -> None:
    written = write_state(tmp_path / "w.state", {})
    with pytest.raises(CorruptCheckpointError, match="unknown checksum algorithm 'crc99'"):
        read_state(tmp_path / "w.state", "crc99:" + written.checksum.partition(":")[2])


def test_state_temp_names_are_recognised() -> None:
    assert is_temp(Path("worker-0001.state.tmp-1234"))
    assert not is_temp(Path("worker-0001.state"))
    assert not is_temp(Path("epoch.tmp-x"))


def test_state_matching_checksum_over_foreign_bytes_raises_bad_magic(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "w.state"
    path.write_bytes(b"not a state file at all")
    checksum = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(CorruptCheckpointError, match="bad magic"):
        read_state(path, checksum)
