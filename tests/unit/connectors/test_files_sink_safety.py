"""The files sink never writes through a planted symlink, and sets its modes itself.

Seen before: running as root, a symlink planted at ``.staging/<file>.inprogress``
made the sink overwrite the file it pointed to, and committed outputs became
symlinks. These tests plant the symlinks themselves (same user: the sink must
not trust names in its own directory either) and run under hostile umasks.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pyarrow as pa
import pytest

from connectors.base import ConnectorConfig
from connectors.files.sink import FilesSink
from engine.errors import ConfigError, ConnectorError

SCHEMA = pa.schema([("x", pa.int64())])
ROWS = pa.record_batch({"x": pa.array([1, 2, 3], pa.int64())})


def sink(path: Path, fmt: str = "parquet") -> FilesSink:
    s = FilesSink()
    s.open(ConnectorConfig("out", {"path": str(path), "format": fmt}, 0, 1, schema=SCHEMA))
    return s


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_files_sink_symlink_at_in_progress_name_is_refused_and_target_untouched(
    tmp_path: Path, fmt: str
) -> None:
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    victim.write_text("precious")
    s = sink(out, fmt)
    (out / ".staging" / f"part-0000000001-0.{fmt}.inprogress").symlink_to(victim)
    s.begin_epoch(1)
    with pytest.raises(ConnectorError, match=r"cannot create .*inprogress: File exists"):
        s.write_batch(ROWS)
    assert victim.read_text() == "precious"


def test_files_sink_symlink_at_a_final_name_is_never_committed_over(tmp_path: Path) -> None:
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    victim.write_text("precious")
    s = sink(out)
    s.begin_epoch(1)
    s.write_batch(ROWS)
    committable = s.pre_commit(1)
    (out / "part-0000000001-0.parquet").symlink_to(victim)
    with pytest.raises(ConnectorError, match="is a symlink or not a regular file"):
        s.commit_epoch(1, committable)
    assert victim.read_text() == "precious"
    assert (out / "part-0000000001-0.parquet").is_symlink()  # left for a person to look at


def test_files_sink_staging_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / ".staging").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match=r"\.staging is not a directory \(a symlink\?\)"):
        sink(out)


def test_files_sink_directory_writable_by_others_is_refused_unless_ours_and_sticky(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(ConfigError, match=r"sinks.out.path: .*shared is writable by other users"):
        sink(shared)
    os.chmod(shared, 0o1777)  # ours and sticky, like /tmp: others cannot replace our files
    sink(shared).close()


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_files_sink_modes_are_explicit_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        out = tmp_path / "new" / "out"
        s = sink(out)
        s.begin_epoch(1)
        s.write_batch(ROWS)
        s.commit_epoch(1, s.pre_commit(1))
    finally:
        os.umask(old)
    assert mode(out) == 0o755
    assert mode(out / ".staging") == 0o700
    assert mode(out / "part-0000000001-0.parquet") == 0o644
