"""The PostgreSQL sink against a real server (``scripts/postgres``), with real engine runs.

Exactly-once under kill -9 (append), a changelog applied by key (upsert), the
contract's conformance check, leftovers of a crash rolled back, and refusals
that name what to fix.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from connectors.base import ConnectorConfig
from connectors.generator import generate
from connectors.postgres.sink import PostgresSink
from connectors.testing.conformance import check_sink
from tests.fault.test_exactly_once import (
    EVENTS,
    EVENTS_PER_SECOND,
    KEYS,
    SEED,
    Job,
    expected,
    make_job,
    reference,
    run_with_random_kills,
)
from tests.postgres import cluster, query, restart, table_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with cluster() as (url, _):
        yield url


def job(tmp_path: Path, dsn: str, table: str, steps: str | None = None, sink: str = "") -> Job:
    """The fault suite's pipeline (2 generator instances, 2 workers) into the PostgreSQL sink."""
    options = f'dsn = "{dsn}"\ntable = "{table}"\n{sink}'
    return make_job(tmp_path, parallelism=2, sink="postgres", sink_options=options, steps=steps)


@pytest.mark.slow
def test_append_exactly_once_under_random_kills(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, dsn: str
) -> None:
    reference(tmp_path_factory)  # the fault suite's files run: its duration scales kill delays
    why = run_with_random_kills(job(tmp_path, dsn, "w_append"), kills=3)
    got = table_of(dsn, "w_append")
    want = expected()
    assert got.num_rows == want.num_rows, f"{why}: {got.num_rows} rows, {want.num_rows} expected"
    order = [(c, "ascending") for c in want.column_names]
    assert got.cast(want.schema).sort_by(order).equals(want), why
    assert query(dsn, "SELECT gid FROM pg_prepared_xacts") == [], "prepared transactions left"


def test_changelog_upserted_by_key_equals_the_final_counts_also_when_started_over(
    tmp_path: Path, dsn: str
) -> None:
    steps = """
[[query.steps]]
op = "group_by"
key = "key"
aggregates = ["count", "max(ts)"]
"""
    for run in ("first", "again"):  # started over (a new checkpoint directory): epochs from 1
        j = job(tmp_path / run, dsn, "g_upsert", steps, 'mode = "upsert"\nkey = ["key"]')
        done = subprocess.run([sys.executable, "-m", "engine", *j.args()], capture_output=True,
                              text=True, cwd=ROOT, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
    events = pa.table(generate(SEED, 0, EVENTS, KEYS, EVENTS_PER_SECOND))
    want = events.group_by("key").aggregate([([], "count_all"), ("ts", "max")])
    want = want.rename_columns(["key", "count", "max_ts"]).sort_by("key")
    got = table_of(dsn, "g_upsert").sort_by("key")
    assert got.column_names == ["key", "count", "max_ts"]
    assert got.num_rows == KEYS
    assert got.cast(want.schema).equals(want.select(got.column_names))
    assert pc.sum(got["count"]).as_py() == EVENTS


def test_conformance_append_and_upsert(dsn: str) -> None:
    schema = pa.schema([("k", pa.int64()), ("v", pa.float64()), ("s", pa.string())])
    batches = [pa.record_batch({"k": [i, i + 1], "v": [1.0, 2.5], "s": ["a", "é"]}, schema=schema)
               for i in range(0, 12, 2)]  # fmt: skip
    for table, extra in (("c_append", {}), ("c_upsert", {"mode": "upsert", "key": ["k"]})):
        def read_back(_sink: PostgresSink, table: str = table) -> list[dict]:  # type: ignore[type-arg]
            rows = query(dsn, f"SELECT k, v, s FROM {table}")
            return [{"k": k, "v": v, "s": s} for k, v, s in rows]

        cfg = ConnectorConfig("out", {"dsn": dsn, "table": table, **extra}, schema=schema)
        check_sink(PostgresSink, cfg, batches, read_back=read_back)


def test_leftover_prepared_epochs_are_rolled_back_and_a_lost_one_is_named(dsn: str) -> None:
    schema = pa.schema([("k", pa.int64())])
    cfg = ConnectorConfig("left", {"dsn": dsn, "table": "leftover"}, schema=schema)
    crashed = PostgresSink()
    crashed.open(cfg)
    for epoch in (1, 2):  # a process that prepared two epochs, then died
        crashed.begin_epoch(epoch)
        crashed.write_batch(pa.record_batch({"k": [epoch]}, schema=schema))
        crashed.pre_commit(epoch)
    crashed.close()
    assert len(query(dsn, "SELECT gid FROM pg_prepared_xacts")) == 2
    again = PostgresSink()
    again.open(cfg)
    again.commit_epoch(1, {"gid": "ringstream:leftover/left:1"})  # the manifest had epoch 1
    again.rollback_epoch(2)
    assert query(dsn, "SELECT gid FROM pg_prepared_xacts") == []
    assert query(dsn, "SELECT k FROM leftover") == [(1,)]
    again.commit_epoch(1, None)  # idempotent
    with pytest.raises(Exception, match="neither prepared nor committed"):
        again.commit_epoch(2, None)  # rolled back: its rows are gone, and the sink says so
    again.close()


def test_refusals_name_what_to_fix(tmp_path: Path, dsn: str) -> None:
    query(dsn, "CREATE TABLE IF NOT EXISTS other_cols (a int)")
    j = job(tmp_path / "a", dsn, "other_cols")
    done = subprocess.run([sys.executable, "-m", "engine", *j.args()], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)  # fmt: skip
    assert done.returncode != 0
    assert "other_cols has columns ['a']" in done.stderr
    j = job(tmp_path / "b", dsn, "needs_key", sink='mode = "upsert"')
    done = subprocess.run([sys.executable, "-m", "engine", "validate", str(j.pipeline)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 2 and 'mode = "upsert" needs the key columns' in done.stderr
    j = job(tmp_path / "c", dsn, "bad name; drop")
    done = subprocess.run([sys.executable, "-m", "engine", "validate", str(j.pipeline)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "a table name is `table` or `schema.table`" in done.stderr


def test_server_without_prepared_transactions_refused_at_validate(tmp_path: Path) -> None:
    with cluster() as (url, where):
        query(url, "ALTER SYSTEM SET max_prepared_transactions = 0")
        restart(where)
        j = job(tmp_path, url, "never_written")
        done = subprocess.run([sys.executable, "-m", "engine", "validate", str(j.pipeline)],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "max_prepared_transactions = 0" in done.stderr
        assert "set max_prepared_transactions (e.g. 16) in postgresql.conf" in done.stderr
        assert query(url, "SELECT to_regclass('never_written')") == [(None,)]
