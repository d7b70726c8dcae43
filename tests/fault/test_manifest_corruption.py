"""A corrupt or truncated newest manifest: reported by name, skipped, and never a duplicate.

A restart restores the newest manifest that verifies; every newer one is
reported (file and reason) and removed. After a killed run whose newest
manifest was never committed, falling back one epoch replays that epoch and
the output is exact. After a completed run the newest manifest's files are
already committed: falling back past it would write that epoch twice, and the
files sink refuses (naming the committed files) rather than duplicate a row.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pyarrow as pa
import pytest

from tests.fault.test_exactly_once import (
    EngineRun,
    assert_same,
    committed,
    engine,
    make_job,
    reference,
    wait_gone,
)


@pytest.fixture
def ref(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    return reference(tmp_path_factory)[0]


def newest_manifest(checkpoints: Path) -> tuple[int, Path]:
    found = sorted(checkpoints.glob("epoch-*.manifest"))
    assert found, f"no manifest in {checkpoints}"
    return int(re.findall(r"\d+", found[-1].name)[0]), found[-1]


def corrupt(path: Path, how: str) -> str:
    """Damage a manifest file; returns the reason a restore gives for it."""
    data = bytearray(path.read_bytes())
    if how == "flip":  # one byte of the payload: the checksum no longer matches
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        return "checksum mismatch"
    path.write_bytes(bytes(data[: len(data) // 2]))
    return "truncated"


@pytest.mark.slow
def test_manifest_newest_corrupt_after_killed_run_falls_back_output_equals_reference(
    tmp_path: Path, ref: pa.Table
) -> None:
    how = "flip"  # truncation: the completed-run case below (both decoded in test_checkpoints_cli)
    job = make_job(tmp_path)
    marks = tmp_path / "marks"
    marks.mkdir()
    fault = {
        "RINGSTREAM_FAULT": "coordinator.after_manifest@3",
        "RINGSTREAM_FAULT_MARKS": str(marks),
    }
    with EngineRun(job, fault) as run:  # manifest 3 is written, its commit never sent
        assert run.wait() == -signal.SIGKILL, run.stderr
        assert not wait_gone(run.pids())
    epoch, path = newest_manifest(job.checkpoints)
    assert epoch == 3
    reason = corrupt(path, how)
    again = engine(*job.args())
    assert again.returncode == 0, again.stderr
    assert f"checkpoint: skipping checkpoint epoch 3: manifest {path}: {reason}" in again.stderr
    assert "recovering from epoch 2" in again.stderr
    assert_same(committed(job), ref, f"manifest 3 {how}, recovered from 2")


@pytest.mark.slow
def test_manifest_newest_truncated_after_completed_run_rerun_refuses_to_commit_twice(
    tmp_path: Path, ref: pa.Table
) -> None:
    job = make_job(tmp_path)
    first = engine(*job.args())
    assert first.returncode == 0, first.stderr
    epoch, path = newest_manifest(job.checkpoints)
    reason = corrupt(path, "truncate")
    again = engine(*job.args(), env={"RINGSTREAM_CHECKPOINT__MAX_RESTARTS": "0"})
    assert again.returncode == 1, again.stderr
    assert f"skipping checkpoint epoch {epoch}: manifest {path}: {reason}" in again.stderr
    assert f"recovering from epoch {epoch - 1}" in again.stderr
    assert f"already holds committed files of epoch >= {epoch}" in again.stderr
    assert f"part-{epoch:010d}-0.parquet" in again.stderr
    assert_same(committed(job), ref, "after the refused rerun")
