"""The README's pipeline benchmark command runs and reports every documented key."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def bench(module: str, *args: str, timeout: int = 300) -> Any:
    """``python -m <module> --json ARGS``: its JSON object (the command must succeed)."""
    out = subprocess.run([sys.executable, "-m", module, "--json", *args],
                         capture_output=True, text=True, timeout=timeout, check=True)  # fmt: skip
    return json.loads(out.stdout)


def test_bench_pipeline_json_has_every_documented_key() -> None:
    result = bench("bench.pipeline", "--events", "300000", "--repeat", "1")
    assert {"engine", "baseline_single_process", "cpus"} <= set(result)
    assert set(result["engine"]) == {"1", "2"}
    for fig in (*result["engine"].values(), result["baseline_single_process"]):
        assert fig["events_per_s"] > 0 and fig["elapsed_s"] > 0


def test_bench_metrics_runs_each_variant_and_scrapes() -> None:
    result = bench("bench.metrics", "--events", "3000000", "--repeat", "1",
                   "--scrape-every", "0.02")  # fmt: skip
    assert set(result["events_per_s"]) == {"off", "on", "scraped"}
    assert all(v > 0 for v in result["events_per_s"].values())
    assert result["scrapes_per_run"] >= 1 and result["scrape_ms_mean"] > 0
    assert set(result["ratios"]) == {"on_vs_off", "scraped_vs_off"}


def test_bench_w1_reports_engine_duckdb_and_stages() -> None:
    result = bench("bench.w1", "--events", "400000", "--repeat", "1")
    assert result["engine_events_per_s"] > 0 and result["duckdb_1_thread_events_per_s"] > 0
    assert {"source", "worker", "sink"} <= set(result["engine_cpu_ns_per_event"])
    assert all(mb > 10 for mb in result["engine_max_rss_mb"].values())
    assert {"read", "split (2 workers)", "window (dense path)", "window (hash path)"} <= set(
        result["stages_ns_per_event"]
    )
    assert set(result["ratios"]) == {
        "engine_vs_duckdb_parquet", "window_step_vs_duckdb_in_memory", "window_step_events_per_s",
    }  # fmt: skip


def test_bench_latency_reports_percentiles_and_cpu_per_process() -> None:
    result = bench("bench.latency", "--batches", "300", "--idle-s", "0.5")
    assert result["batches"] == 300
    lat = result["latency_us"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    roles = set(result["cpu_percent_streaming"])
    assert {"coordinator", "worker 0", "source 'in'", "sink 'out'"} <= roles


def test_bench_scaling_reports_each_worker_count() -> None:
    result = bench("bench.scaling", "--events", "300000", "--repeat", "1")
    for rows in result["workloads"].values():
        assert [r["workers"] for r in rows][:2] == [1, 2]
        assert all(r["events_per_s"] > 0 and "worker" in r["cpu_ns_per_event"] for r in rows)
        assert rows[0]["efficiency"] == 1.0


def test_bench_postgres_sink_against_adbc_alone() -> None:
    result = bench("bench.postgres_sink", "--rows", "200000", "--repeat", "1", timeout=600)
    assert set(result["rows_per_s"]) == {"adbc", "sink", "engine"}
    assert all(v > 0 for v in result["rows_per_s"].values())
    assert set(result["ratios"]) == {"sink_vs_adbc", "engine_vs_adbc"}
