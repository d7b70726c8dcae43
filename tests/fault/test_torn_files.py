"""Checkpoints survive kill -9 mid-write and torn files: restore finds a complete epoch.

The kill tests run a real writer process (``writer_loop``: state files, manifest,
mark committed, in a loop, restoring first like the coordinator does) and
SIGKILL it at random moments, several times over the same store. A killed
process cannot tear a file that was published by rename, so every visible
manifest must stay valid and nothing the writer reported durable may be lost.
The torn-file tests damage files the way a power loss can (a short or
zero-filled file under its final name) and check the fallback.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from engine.checkpoint import CheckpointStore, Manifest

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 2
ROWS = 100_000


def expected_state(epoch: int, worker: int) -> dict[str, pa.Table]:
    base = np.arange(ROWS, dtype=np.int64) + epoch * 1_000_000 + worker
    return {
        "op0/counts": pa.table({"key": base, "n": base * 3}),
        "op1/meta": pa.table({"epoch": [epoch], "worker": [worker]}),
        "op2/empty": pa.schema([("x", pa.string())]).empty_table(),
    }


def writer_loop(root: str) -> None:
    """Child process: restore, then checkpoint epochs forever; print each durable epoch."""
    store = CheckpointStore(Path(root), keep=3)
    restored = store.latest_valid(lambda line: print(f"report {line}", flush=True))
    store.discard_newer(restored.epoch if restored else -1)
    epoch = (restored.epoch if restored else 0) + 1
    while True:
        refs = [store.write_state(epoch, w, expected_state(epoch, w)) for w in range(WORKERS)]
        m = Manifest(
            pipeline_id="torn",
            pipeline_hash="h",
            epoch=epoch,
            created_unix_s=time.time(),
            source_offsets={"gen": [{"epoch": epoch}]},
            state_files=refs,
        )
        store.write_manifest(m)
        print(f"durable {epoch}", flush=True)
        store.mark_committed(epoch)
        epoch += 1


def start_writer(root: Path) -> subprocess.Popen[str]:
    code = (
        "import sys; from tests.fault.test_torn_files import writer_loop; writer_loop(sys.argv[1])"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(root)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_restorable(store: CheckpointStore, at_least: int) -> Manifest:
    reports: list[str] = []
    m = store.latest_valid(reports.append)
    assert reports == []
    assert m is not None and m.epoch >= at_least
    assert all(info.ok for info in store.list()), [i.status for i in store.list()]
    assert m.source_offsets == {"gen": [{"epoch": m.epoch}]}
    for ref in m.state_files:
        got = store.read_state(ref)
        want = expected_state(m.epoch, ref.index)
        assert all(got[name].equals(want[name]) for name in want)
    return m


def test_checkpoint_writer_killed_at_random_points_leaves_store_restorable(
    tmp_path: Path,
) -> None:
    rng = random.Random(20240501)
    store = CheckpointStore(tmp_path, keep=3)
    durable = 0
    for _ in range(8):
        proc = start_writer(tmp_path)
        try:
            assert proc.stdout is not None
            seen_before = durable
            while durable < seen_before + 2:  # let it restore and complete two epochs
                line = proc.stdout.readline()
                assert line, f"writer exited early: {proc.stderr.read() if proc.stderr else ''}"
                if line.startswith("durable "):
                    durable = int(line.split()[1])
            time.sleep(rng.uniform(0.0, 0.05))
            os.kill(proc.pid, signal.SIGKILL)
            rest, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err
        assert "report " not in rest
        durable = max([durable, *(int(x.split()[1]) for x in rest.splitlines() if "durable" in x)])
        m = assert_restorable(store, at_least=durable)
        assert m.epoch <= durable + 1  # at most the one it was reporting when killed
        durable = m.epoch
    assert durable >= 16


def test_checkpoint_torn_newest_manifest_falls_back_to_previous(tmp_path: Path) -> None:
    rng = random.Random(7)
    for trial in range(20):
        store = CheckpointStore(tmp_path / str(trial))
        for epoch in (1, 2):
            refs = [store.write_state(epoch, w, expected_state(epoch, w)) for w in range(WORKERS)]
            store.write_manifest(
                Manifest(
                    pipeline_id="torn",
                    pipeline_hash="h",
                    epoch=epoch,
                    created_unix_s=0.0,
                    source_offsets={"gen": [{"epoch": epoch}]},
                    state_files=refs,
                )
            )
        path = store.manifest_path(2)
        data = path.read_bytes()
        cut = rng.randrange(len(data))
        torn = data[:cut] if trial % 2 else data[:cut] + b"\x00" * (len(data) - cut)
        path.write_bytes(torn)
        reports: list[str] = []
        m = store.latest_valid(reports.append)
        assert m is not None and m.epoch == 1
        assert len(reports) == 1 and str(path) in reports[0]


def test_checkpoint_zero_filled_state_file_falls_back_to_previous(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    for epoch in (1, 2):
        refs = [store.write_state(epoch, w, expected_state(epoch, w)) for w in range(WORKERS)]
        store.write_manifest(
            Manifest(
                pipeline_id="torn",
                pipeline_hash="h",
                epoch=epoch,
                created_unix_s=0.0,
                source_offsets={"gen": [{"epoch": epoch}]},
                state_files=refs,
            )
        )
    state = tmp_path / refs[1].path
    state.write_bytes(b"\x00" * state.stat().st_size)  # size right, data never reached disk
    reports: list[str] = []
    m = store.latest_valid(reports.append)
    assert m is not None and m.epoch == 1
    assert "worker-0001.state: checksum mismatch" in reports[0]
    store.discard_newer(m.epoch)
    assert_restorable(store, at_least=1)
