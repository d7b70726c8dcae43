"""A full disk under the files sink: the error names the cause and the file; nothing torn is seen.

Seen before: ENOSPC surfaced as "Operation on closed file" after retries of a
broken writer. The output goes to a tmpfs of 512 KiB (mounted by the test, as
root, like CI) that a few epochs fill.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from connectors.files.committed import read_committed
from connectors.generator import SCHEMA, generate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"this test mounts a small tmpfs (needs root): {done.stderr}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_files_sink_full_disk_fails_naming_cause_and_file(
    tmp_path: Path, small_disk: Path, fmt: str
) -> None:
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(f"""
[pipeline]
name = "enospc"
delivery = "exactly-once"
[checkpoint]
dir = "{tmp_path / "ckpt"}"
interval_ms = 100
max_restarts = 1
restart_backoff_ms = 0
[[sources]]
name = "events"
type = "generator"
events = 2_000_000
batch_rows = 20_000
[[sinks]]
name = "out"
type = "files"
format = "{fmt}"
path = "{small_disk / "out"}"
""")
    topo = tmp_path / "t.toml"
    topo.write_text("[topology]\ncoordinator = 0\nconnectors = [0]\nworkers = [1]\n")
    done = subprocess.run(
        [sys.executable, "-m", "engine", "run", str(pipeline), "--topology", str(topo)],
        capture_output=True, text=True, cwd=ROOT, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "No space left on device (ENOSPC)" in done.stderr, done.stderr
    assert str(small_disk / "out" / ".staging") in done.stderr
    assert "closed file" not in done.stderr
    assert "restart 1/1" in done.stderr  # a full disk may clear up: one restart, then it gives up
    # what was committed before the disk filled is readable and exactly the stream's prefix
    committed = read_committed(small_disk / "out", SCHEMA)
    prefix = pa.table(generate(seed=1, start=0, stop=committed.num_rows, keys=10_000,
                               events_per_second=1_000_000))  # fmt: skip
    assert committed.equals(prefix)
