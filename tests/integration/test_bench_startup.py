"""``bench.startup`` runs a real engine and reports the split it documents (figures not judged)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_startup_json_has_every_phase() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.startup", "--runs", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["runs"] == 2 and len(result["engine_runs"]) == 2
    for run in result["engine_runs"]:
        assert set(run) == {"wall", "plan", "children", "run", "exit"}
        assert all(v >= 0 for v in run.values()), run
        assert run["plan"] + run["children"] + run["run"] + run["exit"] <= run["wall"] + 0.01
    assert result["baseline_import_pyarrow_median_s"] > 0
    assert result["machine"]["count"] >= 1
