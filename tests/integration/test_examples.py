"""The examples the README points to run as a new user would run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_example_ring_two_processes_moves_one_million_rows() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "ring_two_processes.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    assert "received 1,000,000 rows" in out.stdout
