"""``python -m engine checkpoints DIR``: list every manifest, exit 0 only if the newest is valid.

The checkpoints are those of a real completed run (copied, then damaged).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.fault.test_exactly_once import engine, reference


@pytest.fixture
def store(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkpoint directory a completed run left."""
    job = reference(tmp_path_factory)[1]
    return Path(shutil.copytree(job.checkpoints, tmp_path / "checkpoints"))


def manifests(store: Path) -> list[Path]:
    """Newest first."""
    return sorted(store.glob("epoch-*.manifest"), reverse=True)


def epoch_of(path: Path) -> int:
    return int(re.findall(r"\d+", path.name)[0])


def test_checkpoints_completed_run_lists_every_manifest_and_exits_0(store: Path) -> None:
    done = engine("checkpoints", str(store))
    assert done.returncode == 0, done.stdout + done.stderr
    files = manifests(store)
    assert len(files) >= 2  # keep = 3 of a run of several epochs
    rows = re.findall(r"^\s+(\d+)\s+\S+Z\s+(\w+)", done.stdout, re.M)
    assert [int(e) for e, _ in rows] == [epoch_of(p) for p in files]
    assert {status for _, status in rows} == {"committed"}
    assert f"verdict: OK: the newest manifest (epoch {epoch_of(files[0])}) is valid" in done.stdout


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:], "checksum mismatch"),
        (lambda b: b"", "truncated: 0 bytes"),
    ],
    ids=["half", "flipped-byte", "empty"],
)
def test_checkpoints_newest_corrupt_exits_1_naming_file_and_fallback(
    store: Path, damage, reason: str
) -> None:  # type: ignore[no-untyped-def]
    newest, previous = manifests(store)[:2]
    newest.write_bytes(damage(newest.read_bytes()))
    done = engine("checkpoints", str(store))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"CORRUPT: manifest {newest}: {reason}" in done.stdout
    assert (
        f"verdict: NOT OK: the newest manifest (epoch {epoch_of(newest)}) is corrupt; "
        f"a restart falls back to epoch {epoch_of(previous)}"
    ) in done.stdout


def test_checkpoints_older_corrupt_newest_valid_exits_0(store: Path) -> None:
    newest, older = manifests(store)[0], manifests(store)[-1]
    older.write_bytes(older.read_bytes()[:-1])
    done = engine("checkpoints", str(store))
    assert done.returncode == 0, done.stdout
    assert f"CORRUPT: manifest {older}: truncated" in done.stdout
    assert f"the newest manifest (epoch {epoch_of(newest)}) is valid" in done.stdout


def test_checkpoints_empty_directory_exits_1(tmp_path: Path) -> None:
    done = engine("checkpoints", str(tmp_path))
    assert done.returncode == 1
    assert "verdict: NOT OK: no manifests" in done.stdout


def test_checkpoints_missing_directory_exits_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    done = engine("checkpoints", str(missing))
    assert done.returncode == 2
    assert f"{missing}: no such checkpoint directory" in done.stderr
