"""The examples the README points to run as a new user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from connectors.files.sink import read_committed
from connectors.generator import generate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# examples/postgres_cdc and examples/kafka need a server: run as their READMEs say in
# tests/integration/test_postgres_cdc.py and test_kafka_sink.py
PIPELINES = sorted(
    p for p in EXAMPLES.rglob("*.toml")
    if "topology" not in tomllib.loads(p.read_text())
    and p.parent.name not in ("postgres_cdc", "kafka")
)


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


def test_example_pipeline_files_are_all_found() -> None:
    names = {str(p.relative_to(EXAMPLES)) for p in PIPELINES}
    assert {"quickstart.toml", "nexmark/q5.toml", "nexmark/q8.toml"} <= names
    assert "topology.toml" not in names


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_pipeline_validates_with_two_workers(path: Path, tmp_path: Path) -> None:
    topo = tmp_path / "topology.toml"
    topo.write_text("[topology]\ncoordinator = 0\nconnectors = [0]\nworkers = [0, 1]\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "validate",
            str(path),
            "--topology",
            str(topo),
            "--oversubscribe",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # relative paths in the example resolve here, not in the repository
    )
    assert done.returncode == 0, done.stderr
    name = tomllib.loads(path.read_text())["pipeline"]["name"]
    assert done.stdout.startswith(f"ok: pipeline {name!r}")
    assert "2 worker(s)" in done.stdout


def test_example_quickstart_runs_small_and_commits_one_row_per_window_and_key(
    tmp_path: Path,
) -> None:
    events, out = 2_000_000, tmp_path / "quickstart"
    env = {
        **os.environ,
        "RINGSTREAM_SOURCES__0__EVENTS": str(events),
        "RINGSTREAM_SINKS__0__PATH": str(out),
        "RINGSTREAM_CHECKPOINT__DIR": str(tmp_path / "checkpoints"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "run",
            str(EXAMPLES / "quickstart.toml"),
            "--topology",
            str(EXAMPLES / "topology.toml"),
            "--oversubscribe",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert f"done: {events:,} events" in done.stdout
    # the example's own generator settings: seed 1, 10,000 keys, 1 M events per second
    batch = generate(seed=1, start=0, stop=events, keys=10_000, events_per_second=1_000_000)
    ts, key = batch.column("ts").to_numpy(), batch.column("key").to_numpy()
    windows = np.unique((ts // 1000) * 10_000 + key).size
    got = read_committed(out)
    assert got.num_rows == windows
    assert f"{windows:,} output rows to {out}" in done.stdout
    assert pc.sum(got["count"]).as_py() == events
    assert got.column_names == [
        "window_start",
        "window_end",
        "key",
        "count",
        "sum_value",
        "avg_value",
    ]
    assert not (tmp_path / ".ringstream").exists()  # checkpoints went where the variable said


def test_example_trades_string_keys_two_workers_equal_duckdb(tmp_path: Path) -> None:
    import duckdb
    import pyarrow as pa

    from connectors.generator import key_names, with_string_keys
    from tests.tables import assert_tables_match

    events, out = 1_000_000, tmp_path / "trades"
    env = {
        **os.environ,
        "RINGSTREAM_SOURCES__0__EVENTS": str(events),
        "RINGSTREAM_SINKS__0__PATH": str(out),
        "RINGSTREAM_CHECKPOINT__DIR": str(tmp_path / "checkpoints"),
        "RINGSTREAM_METRICS__ENABLED": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", "engine", "run", str(EXAMPLES / "trades.toml"), "--workers", "2",
         "--oversubscribe"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    raw = generate(seed=3, start=0, stop=events, keys=50_000, events_per_second=1_000_000)
    con = duckdb.connect()
    con.register("t", pa.table(with_string_keys(raw, key_names("user-", 50_000))))
    want = con.sql("""
        SELECT ts - ts % 5000 AS window_start, ts - ts % 5000 + 5000 AS window_end,
               concat('desk-', substr(key, 10, 2)) AS desk, key AS "user", count(*) AS count,
               sum(value * 100 * (CAST(value * 1000 AS BIGINT) % 7 + 1)) AS notional,
               avg(CASE WHEN CAST(value * 1000 AS BIGINT) % 7 + 1 > 3
                        THEN CAST(value * 1000 AS BIGINT) % 7 + 1 ELSE 0 END) AS big_qty,
               max(value * 100) AS max_price
        FROM t WHERE value > 0.05 GROUP BY ALL""").to_arrow_table()
    got = read_committed(out)
    order = [(c, "ascending") for c in ("window_start", "desk", "user")]
    assert_tables_match(got.sort_by(order), want.cast(got.schema).sort_by(order))
