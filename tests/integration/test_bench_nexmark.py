"""The Nexmark benchmark command runs with tiny sizes and reports every documented key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_nexmark_json_has_every_documented_key_per_query(tmp_path: Path) -> None:
    out_file = tmp_path / "nexmark.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.nexmark", "--json", "--events", "100000", "--repeat", "1",
         "--queries", "q2,q8", "--out", str(out_file), "--connectors", "0"],
        capture_output=True, text=True, timeout=300, check=True, cwd=ROOT,
    )  # fmt: skip
    result = json.loads(done.stdout)
    assert json.loads(out_file.read_text()) == result
    assert {"cpus", "events", "repeat", "queries", "load_average"} <= set(result)
    assert result["cpus"]["pinning"]["connectors (sinks, then sources)"] == [0]
    assert result["events"] == 100_000 and result["repeat"] == 1
    assert list(result["queries"]) == ["q2", "q8"]
    for q, fig in result["queries"].items():
        assert set(fig["engine"]) == {"1", "2"}, q
        assert set(fig["ratios"]) == {"1_worker_vs_baseline", "2_workers_vs_baseline"}, q
        figures = [*fig["engine"].values(), fig["baseline_single_process"]]
        for f in figures:
            assert f["events_per_s"] > 0 and f["elapsed_s"] > 0 and f["model_events_per_s"] > 0
            assert len(f["runs_events_per_s"]) == 1
        # every variant read the same source rows: 46 bids / 50 events, or 4 persons+auctions
        expected_rows = 92_000 if q == "q2" else 8_000
        assert {f["rows"] for f in figures} == {expected_rows}, q


def test_bench_nexmark_unknown_query_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.nexmark", "--queries", "q0,q99"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert "q99" in done.stderr
