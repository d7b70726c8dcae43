"""CheckpointStore: atomic manifests, retention, fallback past damaged checkpoints."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from engine.checkpoint import CheckpointStore, Manifest
from engine.errors import CheckpointError, ConfigError, CorruptCheckpointError


def state_for(epoch: int) -> dict[str, pa.Table]:
    return {"counts": pa.table({"key": [1, 2], "n": [epoch, epoch * 10]})}


def checkpoint(store: CheckpointStore, epoch: int, workers: int = 2) -> Manifest:
    refs = [store.write_state(epoch, w, state_for(epoch)) for w in range(workers)]
    m = Manifest(
        pipeline_id="p",
        pipeline_hash="h",
        epoch=epoch,
        created_unix_s=1_700_000_000.0 + epoch,
        state_files=refs,
        source_offsets={"gen": [{"batch": epoch}]},
        metrics={"duration_ms": float(epoch)},
    )
    store.write_manifest(m)
    return m


def names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_store_write_manifest_then_latest_valid_returns_it(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    m = checkpoint(store, 1)
    assert store.latest_valid() == m
    ref = m.state_files[1]
    assert ref.path == "epoch-00000000000000000001/worker-0001.state"
    assert store.read_state(ref)["counts"].column("n").to_pylist() == [1, 10]


def test_store_empty_directory_has_no_latest_valid(tmp_path: Path) -> None:
    assert CheckpointStore(tmp_path / "new").latest_valid() is None


def test_store_keep_below_one_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keep=0"):
        CheckpointStore(tmp_path, keep=0)


def test_store_retention_keeps_newest_k_manifests_and_their_state(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=3)
    for epoch in range(1, 8):
        checkpoint(store, epoch)
    assert names(tmp_path) == [
        f"epoch-{e:020d}{suffix}" for e in (5, 6, 7) for suffix in ("", ".manifest")
    ]
    assert [i.epoch for i in store.list()] == [7, 6, 5]
    assert all(i.ok for i in store.list())


def test_store_retention_never_removes_state_of_epochs_in_flight(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=1)
    checkpoint(store, 1)
    store.write_state(3, 0, state_for(3))  # a worker already on epoch 3
    checkpoint(store, 2)
    assert (tmp_path / f"epoch-{3:020d}" / "worker-0000.state").exists()
    assert not (tmp_path / f"epoch-{1:020d}").exists()


def test_store_retention_keeps_state_dir_referenced_by_a_kept_manifest(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=1)
    m1 = checkpoint(store, 1)
    m2 = Manifest(
        pipeline_id="p",
        pipeline_hash="h",
        epoch=2,
        created_unix_s=0.0,
        state_files=m1.state_files,  # unchanged state: epoch 2 reuses epoch 1's files
    )
    store.write_manifest(m2)
    assert store.latest_valid() == m2
    assert not store.manifest_path(1).exists()


def test_store_write_manifest_refuses_missing_state_file(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    ref = store.write_state(1, 0, state_for(1))
    (tmp_path / ref.path).unlink()
    m = Manifest(
        pipeline_id="p", pipeline_hash="h", epoch=1, created_unix_s=0.0, state_files=[ref]
    )
    with pytest.raises(CheckpointError, match="worker 0 is missing"):
        store.write_manifest(m)
    assert not store.manifest_path(1).exists()


def test_store_latest_valid_falls_back_past_corrupt_newest(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    m1 = checkpoint(store, 1)
    checkpoint(store, 2)
    path = store.manifest_path(2)
    path.write_bytes(path.read_bytes()[:-1])
    reports: list[str] = []
    assert store.latest_valid(reports.append) == m1
    assert len(reports) == 1
    assert "epoch 2" in reports[0] and str(path) in reports[0] and "truncated" in reports[0]


def test_store_latest_valid_falls_back_past_missing_state_file(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    m1 = checkpoint(store, 1)
    m2 = checkpoint(store, 2)
    (tmp_path / m2.state_files[1].path).unlink()
    reports: list[str] = []
    assert store.latest_valid(reports.append) == m1
    assert "worker-0001.state: missing" in reports[0]


def test_store_latest_valid_falls_back_past_corrupt_state_file(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    m1 = checkpoint(store, 1)
    m2 = checkpoint(store, 2)
    state = tmp_path / m2.state_files[0].path
    data = bytearray(state.read_bytes())
    data[-20] ^= 0xFF
    state.write_bytes(bytes(data))
    reports: list[str] = []
    assert store.latest_valid(reports.append) == m1
    assert "checksum mismatch" in reports[0]


def test_store_latest_valid_with_every_manifest_corrupt_returns_none(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    checkpoint(store, 1)
    store.manifest_path(1).write_bytes(b"garbage")
    reports: list[str] = []
    assert store.latest_valid(reports.append) is None
    assert len(reports) == 1


def test_store_mark_committed_rewrites_status_and_keeps_the_rest(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    m = checkpoint(store, 4)
    store.mark_committed(4)
    store.mark_committed(4)  # idempotent
    got = store.latest_valid()
    assert got is not None and got.sink_status == "committed"
    assert got.state_files == m.state_files and got.source_offsets == m.source_offsets
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_store_mark_committed_of_unknown_epoch_raises(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no manifest for epoch=9"):
        CheckpointStore(tmp_path).mark_committed(9)


def test_store_mark_committed_of_corrupt_manifest_raises_corrupt(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    checkpoint(store, 1)
    store.manifest_path(1).write_bytes(b"RSMANIF\x00")
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        store.mark_committed(1)


def test_store_discard_newer_removes_later_epochs_and_temp_files(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    checkpoint(store, 1)
    checkpoint(store, 2)
    store.manifest_path(2).write_bytes(b"torn")
    store.write_state(3, 0, state_for(3))
    (tmp_path / "epoch-00000000000000000003.manifest.tmp-99").write_bytes(b"half")
    (store.state_dir(1) / "worker-0005.state.tmp-98").write_bytes(b"half")
    restored = store.latest_valid()
    assert restored is not None and restored.epoch == 1
    store.discard_newer(restored.epoch)
    assert names(tmp_path) == ["epoch-00000000000000000001", "epoch-00000000000000000001.manifest"]
    assert names(store.state_dir(1)) == ["worker-0000.state", "worker-0001.state"]
    assert store.latest_valid() == restored


def test_store_discard_newer_minus_one_clears_everything(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    checkpoint(store, 1)
    store.discard_newer(-1)
    assert names(tmp_path) == []


def test_store_list_reports_status_sizes_newest_first(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    checkpoint(store, 1)
    m2 = checkpoint(store, 2)
    store.mark_committed(1)
    (tmp_path / m2.state_files[0].path).unlink()
    infos = store.list()
    assert [i.epoch for i in infos] == [2, 1]
    assert not infos[0].ok and "missing" in infos[0].status
    assert infos[0].manifest is not None  # it decodes; only its state is bad
    assert infos[0].state_bytes == sum(r.bytes for r in m2.state_files)
    assert infos[1].ok and infos[1].manifest is not None
    assert infos[1].manifest.sink_status == "committed"
    assert infos[1].manifest_bytes == store.manifest_path(1).stat().st_size


def test_store_rejects_state_path_outside_the_store(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "s")
    m = checkpoint(store, 1)
    bad = m.state_files[0].__class__(0, "../escape.state", 1, "sha256:00")
    with pytest.raises(CorruptCheckpointError, match="not inside"):
        store.read_state(bad)
