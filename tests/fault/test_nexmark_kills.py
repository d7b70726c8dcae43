"""Nexmark q4 and q6 exactly once across kill -9: a join, a window per auction and a final
stage (q4's running average per category, q6's over step), each with state in every
checkpoint, compared with DuckDB.

Each run is ``python -m engine run examples/nexmark/<q>.toml`` with 2 workers,
``delivery = "exactly-once"`` and a checkpoint every 100 ms; a worker, the sink and a
source are killed with SIGKILL, one per attempt, in an order and at delays drawn from a
seed the failure message prints (``FAULT_TEST_SEED=<n>`` replays one). The committed
output, folded when it is a changelog, must equal the DuckDB reference over the very rows
the sources emit: every closing price and every average once.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pyarrow as pa
import pytest

from connectors.files.sink import read_committed
from tests.fault.test_exactly_once import EngineRun, Job, fault_seed, kill_child, wait_gone
from tests.integration.test_nexmark import assert_same_rows
from tests.nexmark_reference import canonical, generate_tables, reference

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 5_000_000
EVENTS_PER_SECOND = 20_000  # 250 s of event time; an auction lasts up to 0.17 s
SEED = 1  # the examples' seed


@functools.cache
def _tables() -> dict[str, pa.Table]:
    return generate_tables(EVENTS, SEED, EVENTS_PER_SECOND)


def job_for(query: str, tmp: Path) -> tuple[Job, dict[str, str]]:
    topology = tmp / "topology.toml"
    topology.write_text(
        "[topology]\ncoordinator = 0\nconnectors = [0]\nworkers = [0, 1]\n"
        "[rings]\ncapacity = 4194304\n"
    )
    job = Job(tmp, ROOT / "examples" / "nexmark" / f"{query}.toml", topology, tmp / "out",
              tmp / "ckpt")  # fmt: skip
    env = {
        "RINGSTREAM_PIPELINE__DELIVERY": "exactly-once",
        "RINGSTREAM_SINKS__0__PATH": str(job.out),
        "RINGSTREAM_CHECKPOINT__DIR": str(job.checkpoints),
        "RINGSTREAM_CHECKPOINT__INTERVAL_MS": "100",
        "RINGSTREAM_CHECKPOINT__MAX_RESTARTS": "10",
        "RINGSTREAM_CHECKPOINT__RESTART_BACKOFF_MS": "50",
        "RINGSTREAM_METRICS__ENABLED": "false",
    }
    for i in (0, 1):
        env[f"RINGSTREAM_SOURCES__{i}__EVENTS"] = str(EVENTS)
        env[f"RINGSTREAM_SOURCES__{i}__EVENTS_PER_SECOND"] = str(EVENTS_PER_SECOND)
    return job, env


@pytest.mark.slow
@pytest.mark.parametrize("query", ["q4", "q6"])
def test_nexmark_join_window_and_final_stage_exactly_once_under_kills(
    query: str, tmp_path: Path
) -> None:
    seed = fault_seed()
    rng = random.Random(seed)
    kinds = ["worker", "sink", "source"]
    rng.shuffle(kinds)
    job, env = job_for(query, tmp_path)
    killed = []
    with EngineRun(job, env) as run:
        attempt = 1
        for kind in kinds:
            label, attempt = kill_child(run, kind, rng.uniform(0.15, 0.45), attempt)
            killed.append(label)
            attempt += 1
        rc = run.wait()
        why = f"{query}: seed {seed}, killed {killed}"
        assert rc == 0, f"{why}\n{run.stderr[-4000:]}"
        assert "restart 3/10" in run.stderr, f"{why}: not every kill restarted the run"
        assert not wait_gone(run.pids()), why
    expected = reference(query, _tables())
    assert expected.num_rows > 0
    assert_same_rows(query, canonical(query, read_committed(job.out)), expected)
