"""The checkpoints listing: a table, a verdict line and an exit code."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from engine.checkpoint import CheckpointStore, Manifest, report


def checkpoint(store: CheckpointStore, epoch: int) -> Manifest:
    ref = store.write_state(epoch, 0, {"t": pa.table({"x": list(range(100))})})
    m = Manifest(
        pipeline_id="p",
        pipeline_hash="h",
        epoch=epoch,
        created_unix_s=1_700_000_000.5 + epoch,
        state_files=[ref],
        metrics={"duration_ms": 12.5},
    )
    store.write_manifest(m)
    return m


def test_report_listing_shows_each_epoch_with_status_and_sizes(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    checkpoint(store, 1)
    checkpoint(store, 2)
    store.mark_committed(1)
    text = report.format_listing(store)
    lines = text.splitlines()
    assert lines[1].split() == [
        "epoch",
        "created",
        "(UTC)",
        "status",
        "manifest",
        "state",
        "duration_ms",
    ]
    row2, row1 = lines[2].split(), lines[3].split()
    assert row2[:3] == ["2", "2023-11-14T22:13:22.500Z", "pending"]
    assert row1[:3] == ["1", "2023-11-14T22:13:21.500Z", "committed"]
    assert row1[-1] == "12.5"
    assert row1[4] == "B" and row1[3] == str(store.manifest_path(1).stat().st_size)
    assert lines[-1].startswith("verdict: OK: the newest manifest (epoch 2) is valid")
    assert report.verify(store) == 0


def test_report_corrupt_newest_is_listed_with_reason_and_verify_fails(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    checkpoint(store, 1)
    checkpoint(store, 2)
    path = store.manifest_path(2)
    data = bytearray(path.read_bytes())
    data[20] ^= 1
    path.write_bytes(bytes(data))
    text = report.format_listing(store)
    assert "CORRUPT" in text.splitlines()[2]
    assert f"CORRUPT: manifest {path}: checksum mismatch" in text
    assert text.splitlines()[-1] == (
        "verdict: NOT OK: the newest manifest (epoch 2) is corrupt; a restart falls back to epoch 1"
    )
    assert report.verify(store) == 1


def test_report_empty_store_verifies_as_failure(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    assert "no manifests" in report.format_listing(store).splitlines()[-1]
    assert report.verify(store) == 1


def test_report_main_prints_listing_and_returns_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint(CheckpointStore(tmp_path), 3)
    assert report.main(tmp_path) == 0
    out = capsys.readouterr().out
    assert f"checkpoints in {tmp_path}" in out and "verdict: OK" in out
