"""The PostgreSQL change-capture source against a real server (``scripts/postgres``).

The contract's conformance (snapshot and stream), every mapped column type, the
refusals that name what to configure, schema changes and TRUNCATE; then real engine
runs: a writer process changing a table while CDC -> (pass-through | group_by) ->
the PostgreSQL sink runs, under random kill -9 of every process kind, a coordinator
kill and a server restart, until the target equals the source exactly; a snapshot
killed half-way that resumes; the slot's lag while the engine is stopped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from connectors.base import ConnectorConfig, SourceCheckpoint
from connectors.postgres.cdc import PostgresCdcSource
from connectors.testing.conformance import check_source
from engine.errors import ConfigError, ConnectorError
from tests import cdc_writer
from tests.fault.test_exactly_once import (
    TOPOLOGY,
    EngineRun,
    Job,
    fault_seed,
    kill_child,
    wait_gone,
)
from tests.postgres import clean, cluster, query, restart

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pg() -> Iterator[tuple[str, Path]]:
    with cluster() as found:
        yield found


@pytest.fixture
def dsn(pg: tuple[str, Path]) -> str:
    clean(pg[0])
    return pg[0]


def source(dsn: str, **options: object) -> PostgresCdcSource:
    src = PostgresCdcSource()
    src.open(ConnectorConfig("cdc", {"dsn": dsn, **options}))
    return src


def drain(src: PostgresCdcSource, rows: int, timeout: float = 20) -> pa.Table:
    """Poll until ``rows`` rows came (or the timeout)."""
    got: list[pa.RecordBatch] = []
    deadline = time.monotonic() + timeout
    while sum(b.num_rows for b in got) < rows and time.monotonic() < deadline:
        batch = src.poll_batch(10_000)
        if batch is None:
            src.data_ready(0.05)
        elif batch.batch.num_rows:
            got.append(batch.batch)
    return pa.Table.from_batches(got, schema=src.schema())


# --- the connector alone ---------------------------------------------------------------------


@pytest.mark.parametrize("backfill", [False, True], ids=["then_stream", "snapshot_only"])
def test_snapshot_conformance(dsn: str, backfill: bool) -> None:
    """Chunks of 300 rows (the last one empty); ``snapshot_only``: a bounded source that
    finishes, and leaves no slot behind."""
    cdc_writer.create(dsn, rows=2_400)
    check_source(PostgresCdcSource, ConnectorConfig("cdc", {
        "dsn": dsn, "tables": ["cdc_items"], "chunk_rows": 300, "snapshot_only": backfill}),
        max_records=500, max_rows=2_400)  # fmt: skip
    slots = query(dsn, "SELECT count(*) FROM pg_replication_slots")[0][0]
    assert slots == (0 if backfill else 1)


def test_stream_conformance(dsn: str) -> None:
    """Changes made after the slot exists, read from it (``snapshot = false``)."""
    cdc_writer.create(dsn, rows=100)
    query(dsn, "CREATE PUBLICATION ringstream_cdc FOR TABLE cdc_items")
    query(dsn, "ALTER TABLE cdc_items REPLICA IDENTITY FULL")
    query(dsn, "SELECT pg_create_logical_replication_slot('ringstream_cdc', 'pgoutput')")
    cdc_writer.write(dsn, seed=5, transactions=40)
    src = source(dsn, tables=["cdc_items"], snapshot=False)
    changes = drain(src, 10**9, timeout=3).num_rows
    src.close()
    assert changes > 200
    check_source(PostgresCdcSource, ConnectorConfig("cdc", {
        "dsn": dsn, "tables": ["cdc_items"], "snapshot": False}),
        max_records=5_000, max_rows=changes)  # fmt: skip


TYPES = """CREATE TABLE typed (
    id int PRIMARY KEY, s smallint, b bigint, r real, d double precision,
    n numeric(12, 3), nu numeric, ok boolean, t text, v varchar(8), c char(3),
    ts timestamp, tz timestamptz, day date, tm time, j json, jb jsonb, u uuid,
    raw bytea, ints int[], words text[], mood mood)"""
ROW = ("(%s, -3, 9007199254740993, 1.5, -2.25, 12345.678, 1.0000000001, true, 'héllo', "
       "'v', 'ab', '2024-02-29 12:34:56.789012', '2024-02-29 12:34:56.5+02', '2024-02-29', "
       "'01:02:03.5', '{\"a\": [1, 2]}', '{\"b\": null}', "
       "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff10', '{1,NULL,3}', "
       "ARRAY['a,b', NULL, 'q\"x'], 'happy')")  # fmt: skip


def test_every_mapped_type_reads_the_same_in_the_snapshot_and_the_stream(dsn: str) -> None:
    query(dsn, "DROP TABLE IF EXISTS typed; DROP TYPE IF EXISTS mood")
    query(dsn, "CREATE TYPE mood AS ENUM ('sad', 'happy')")
    query(dsn, TYPES)
    query(dsn, "INSERT INTO typed VALUES " + ROW, (1,))
    src = source(dsn, tables=["typed"])
    snapshot = drain(src, 1)
    query(dsn, "INSERT INTO typed VALUES " + ROW, (2,))
    query(dsn, "UPDATE typed SET t = NULL WHERE id = 2")
    stream = drain(src, 3)
    src.close()
    schema = src.schema()
    assert [str(schema.field(c).type) for c in ("n", "nu", "tz", "ints", "mood")] == [
        "decimal128(12, 3)", "decimal128(38, 10)", "timestamp[us, tz=UTC]", "list<item: int32>",
        "string"]  # fmt: skip
    first = snapshot.to_pylist()[0]
    assert (first["_table"], first["_op"], first["_change"], first["_commit_time"]) == (
        "public.typed", "insert", 1, None)  # fmt: skip
    want = {
        "s": -3, "b": 9007199254740993, "r": 1.5, "d": -2.25, "n": Decimal("12345.678"),
        "nu": Decimal("1.0000000001"), "ok": True, "t": "héllo", "v": "v", "c": "ab ",
        "ts": dt.datetime(2024, 2, 29, 12, 34, 56, 789012),
        "tz": dt.datetime(2024, 2, 29, 10, 34, 56, 500000, tzinfo=dt.UTC),
        "day": dt.date(2024, 2, 29), "tm": dt.time(1, 2, 3, 500000), "j": '{"a": [1, 2]}',
        "jb": '{"b": null}', "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "raw": b"\x00\xff\x10", "ints": [1, None, 3], "words": ["a,b", None, 'q"x'],
        "mood": "happy",
    }  # fmt: skip
    for name, value in want.items():
        got = first[name]
        if isinstance(value, dt.datetime) and value.tzinfo:
            got = got.astimezone(dt.UTC)
        assert got == value, name
    rows = stream.to_pylist()
    assert [(r["id"], r["_op"], r["_change"]) for r in rows] == [
        (2, "insert", 1), (2, "update", -1), (2, "update", 1)]  # fmt: skip
    assert rows[2]["t"] is None and rows[1]["t"] == "héllo"
    assert rows[0]["_commit_time"] is not None and rows[0]["_lsn"] >= first["_lsn"]
    for name in want:  # the stream decodes each type as the snapshot reads it
        assert rows[0][name] == first[name], name


def test_refusals_name_what_to_configure(dsn: str) -> None:
    cdc_writer.create(dsn, rows=3)
    query(dsn, "DROP TABLE IF EXISTS geo; CREATE TABLE geo (id int PRIMARY KEY, p point)")
    cases: list[tuple[dict[str, object], str]] = [
        ({"tables": ["geo"]}, r"column 'p' has type point"),
        ({"tables": ["nope"]}, r"table 'nope' does not exist"),
        ({"tables": ["cdc_items"], "slot": "Bad-Name"}, r"slot = 'Bad-Name'"),
        ({"tables": ["cdc_items"], "tables_typo": 1}, r"unknown option 'tables_typo'"),
    ]
    for options, message in cases:
        with pytest.raises(ConfigError, match=message):
            source(dsn, **options)
    with pytest.raises(ConfigError, match=r"parallelism = 1"):
        PostgresCdcSource().open(ConnectorConfig(
            "cdc", {"dsn": dsn, "tables": ["cdc_items"]}, instance=0, instances=2))  # fmt: skip
    src = source(dsn, tables=["cdc_items"], replica_identity_full=False)
    with pytest.raises(ConfigError, match=r"REPLICA IDENTITY FULL"):
        src.poll_batch(10)
    src.close()
    src = source(dsn, tables=["cdc_items"], create=False)
    with pytest.raises(ConfigError, match=r'CREATE PUBLICATION "ringstream_cdc" FOR TABLE'):
        src.poll_batch(10)
    src.close()
    query(dsn, "CREATE PUBLICATION ringstream_cdc FOR TABLE cdc_items")
    src = source(dsn, tables=["cdc_items"])  # a checkpoint whose slot was dropped meanwhile
    gone = {"tables": ["public.cdc_items"], "slot": "ringstream_cdc", "lsn": 1,
            "snapshot": None, "regions": [[0, None, 1]]}  # fmt: skip
    src.restore(SourceCheckpoint(gone))
    with pytest.raises(ConnectorError, match=r"slot 'ringstream_cdc' no longer exists"):
        src.poll_batch(10)
    src.close()
    query(dsn, "DROP ROLE IF EXISTS plain; CREATE ROLE plain LOGIN")
    with pytest.raises(ConfigError, match=r'ALTER ROLE "plain" REPLICATION'):
        source(dsn.replace("postgres@", "plain@"), tables=["cdc_items"])
    other = source(dsn, tables=["public.cdc_items"])
    with pytest.raises(ConfigError, match=r"captured tables \['public.other'\]"):
        other.restore(SourceCheckpoint({"tables": ["public.other"], "slot": "ringstream_cdc",
                                        "lsn": 1, "snapshot": None, "regions": []}))  # fmt: skip
    other.close()


def test_refusal_of_a_server_without_logical_wal(dsn: str) -> None:
    query(dsn, "ALTER SYSTEM SET wal_level = replica")
    try:
        assert query(dsn, "SHOW wal_level") == [("logical",)]  # needs a restart: test the check
        from connectors.postgres import catalog

        class Replica:  # the check reads what the server says
            def cursor(self):  # type: ignore[no-untyped-def]
                return _FakeCursor([("replica",)])

        with pytest.raises(ConfigError, match=r"wal_level = logical"):
            catalog.check_server(Replica(), "sources.cdc")
    finally:
        query(dsn, "ALTER SYSTEM RESET wal_level")


class _FakeCursor:
    def __init__(self, rows: list[tuple[str]]) -> None:
        self.rows, self.description = rows, [("wal_level",)]

    def __enter__(self) -> _FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def execute(self, *args: object) -> None:
        pass

    def fetchall(self) -> list[tuple[str]]:
        return self.rows


def test_added_column_and_truncate_stop_with_a_message_or_are_skipped(dsn: str) -> None:
    cdc_writer.create(dsn, rows=2)
    src = source(dsn, tables=["cdc_items"])
    assert drain(src, 2).num_rows == 2
    query(dsn, "ALTER TABLE cdc_items ADD COLUMN extra int")
    query(dsn, "INSERT INTO cdc_items VALUES (9, 'g', 1, 1, 'x', 7)")
    with pytest.raises(ConnectorError, match=r"gained column 'extra'.*Restart the pipeline"):
        drain(src, 1, timeout=5)
    src.close()
    # restarted, the source captures the new column: null for rows written before it
    cdc_writer.create(dsn, rows=2)
    src = source(dsn, tables=["cdc_items"], on_truncate="skip")
    assert drain(src, 2).num_rows == 2
    query(dsn, "TRUNCATE cdc_items")
    query(dsn, "INSERT INTO cdc_items VALUES (5, 'g', 1, 1, 'x')")
    assert drain(src, 1).column("id").to_pylist() == [5]
    assert src.metrics()["truncates_skipped"] == 1
    src.close()
    src = source(dsn, tables=["cdc_items"])
    assert drain(src, 1).num_rows == 1
    query(dsn, "TRUNCATE cdc_items")
    with pytest.raises(ConnectorError, match=r'TRUNCATE of \[.public.cdc_items.\].*"skip"'):
        drain(src, 1, timeout=5)
    src.close()


def test_acknowledged_only_when_the_epoch_commits(dsn: str) -> None:
    cdc_writer.create(dsn)
    src = source(dsn, tables=["cdc_items"], snapshot=False)
    src.checkpoint()  # starts: creates the slot
    start = query(dsn, "SELECT confirmed_flush_lsn FROM pg_replication_slots")[0][0]
    query(dsn, "INSERT INTO cdc_items VALUES (1, 'g', 1, 1, 'x')")
    assert drain(src, 1).num_rows == 1
    src.position_recorded(7, src.checkpoint())
    time.sleep(0.3)
    assert query(dsn, "SELECT confirmed_flush_lsn FROM pg_replication_slots")[0][0] == start
    src.notify_committed(7)
    moved = query(dsn, "SELECT confirmed_flush_lsn > %s::pg_lsn FROM pg_replication_slots",
                  (start,))  # fmt: skip
    assert moved == [(True,)]
    src.close()


# --- engine runs -----------------------------------------------------------------------------

PASS = """
[[query.steps]]
op = "project"
columns = ["id", "grp", "amount", "price", "note", "_change"]
"""
GROUPED = """
[[query.steps]]
op = "group_by"
key = ["grp"]
aggregates = ["count as n", "sum(amount) as total"]
"""
EXPECT = {
    "items_copy": ("SELECT id, grp, amount, price, note FROM {t} ORDER BY id", "id"),
    "items_by_grp": ("SELECT grp, n, total FROM {t} ORDER BY grp", "grp"),
}
SOURCE_SQL = {
    "items_copy": "SELECT id, grp, amount, price, note FROM cdc_items ORDER BY id",
    "items_by_grp": "SELECT grp, count(*), sum(amount) FROM cdc_items GROUP BY grp ORDER BY grp",
}


def cdc_job(dir: Path, dsn: str, target: str, steps: str, chunk_rows: int = 2_000,
            interval_ms: int = 200) -> Job:  # fmt: skip
    dir.mkdir(parents=True, exist_ok=True)
    key = EXPECT[target][1]
    pipeline = dir / "pipeline.toml"
    pipeline.write_text(f"""
[pipeline]
name = "cdc_{target}"
delivery = "exactly-once"

[checkpoint]
interval_ms = {interval_ms}
dir = "{dir / 'checkpoints'}"
max_restarts = 20
restart_backoff_ms = 50

[metrics]
enabled = false

[[sources]]
name = "cdc"
type = "postgres_cdc"
dsn = "{dsn}"
tables = ["cdc_items"]
chunk_rows = {chunk_rows}
batch_max_wait_ms = 20
retry = {{ max_retries = 8, base_ms = 100, cap_ms = 2000 }}
{steps}
[[sinks]]
name = "out"
type = "postgres"
dsn = "{dsn}"
table = "{target}"
mode = "upsert"
key = ["{key}"]
retry = {{ max_retries = 8, base_ms = 100, cap_ms = 2000 }}
""")
    topology = dir / "topology.toml"
    topology.write_text(TOPOLOGY)
    return Job(dir, pipeline, topology, dir / "out", dir / "checkpoints")


def target_matches(dsn: str, target: str) -> bool:
    if not query(dsn, "SELECT to_regclass(%s)", (target,))[0][0]:
        return False
    got = query(dsn, EXPECT[target][0].format(t=target))
    return got == query(dsn, SOURCE_SQL[target])


def converge(dsn: str, target: str, run: EngineRun, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not target_matches(dsn, target):
        assert run.proc.poll() is None, f"the run ended early\n{run.stderr}"
        assert time.monotonic() < deadline, f"{target} never caught up\n{run.stderr[-3000:]}"
        time.sleep(0.3)


def stop(run: EngineRun) -> None:
    run.proc.send_signal(signal.SIGINT)
    rc = run.wait(120)
    assert rc == 0, run.stderr[-3000:]
    assert not wait_gone(run.pids())


def writer(dsn: str, seed: int, transactions: int, pause_ms: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.cdc_writer", dsn, str(seed),
                             str(transactions), str(pause_ms)], cwd=ROOT, text=True,
                            stdout=subprocess.DEVNULL)  # fmt: skip


@pytest.mark.parametrize("target,steps", [("items_copy", PASS), ("items_by_grp", GROUPED)],
                         ids=["pass_through", "group_by"])  # fmt: skip
def test_cdc_to_postgres_equals_the_source_while_a_writer_changes_it(
    tmp_path: Path, dsn: str, target: str, steps: str
) -> None:
    cdc_writer.create(dsn, rows=3_000)
    query(dsn, f"DROP TABLE IF EXISTS {target}")
    job = cdc_job(tmp_path, dsn, target, steps)
    with EngineRun(job) as run:
        w = writer(dsn, seed=1, transactions=300, pause_ms=5)
        assert w.wait(120) == 0
        converge(dsn, target, run)
        stop(run)
    assert target_matches(dsn, target)
    assert query(dsn, "SELECT count(*) FROM pg_prepared_xacts") == [(0,)]


def _kill_coordinator(run: EngineRun) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(run.proc.pid, signal.SIGKILL)
    run.wait(60)
    assert not wait_gone(run.pids(), timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("target,steps", [("items_copy", PASS), ("items_by_grp", GROUPED)],
                         ids=["pass_through", "group_by"])  # fmt: skip
def test_cdc_exactly_once_under_kills_and_a_server_restart(
    tmp_path: Path, pg: tuple[str, Path], target: str, steps: str
) -> None:
    """Random kill -9 of children (every kind over the attempts), then of the coordinator,
    then a PostgreSQL restart, while a writer changes the table: the target ends equal to
    the source, and no prepared transaction is left."""
    dsn, where = pg
    clean(dsn)
    seed = fault_seed()
    rng = random.Random(seed)
    cdc_writer.create(dsn, rows=20_000, seed=seed % 97)
    query(dsn, f"DROP TABLE IF EXISTS {target}")
    job = cdc_job(tmp_path, dsn, target, steps, chunk_rows=1_000)
    killed: list[str] = []
    w = writer(dsn, seed=seed % 1000, transactions=1_500, pause_ms=8)
    try:
        with EngineRun(job) as run:
            kinds = ["source", "worker", "sink"]
            rng.shuffle(kinds)
            attempt = 1
            for kind in kinds:  # each kind once, at a random time
                label, attempt = kill_child(run, kind, rng.uniform(0.3, 2.5), attempt)
                killed.append(label)
                attempt += 1
            run.wait_attempt(attempt)
            time.sleep(rng.uniform(0.2, 1.0))
            _kill_coordinator(run)
        killed.append("coordinator")
        with EngineRun(job) as run:
            run.wait_attempt(1)
            time.sleep(1.0)
            restart(where)
            killed.append("postgres restart")
            assert w.wait(180) == 0
            converge(dsn, target, run, timeout=120)
            stop(run)
    finally:
        w.kill()
        w.wait()
    why = f"seed {seed}, killed {killed}"
    assert target_matches(dsn, target), why
    assert query(dsn, "SELECT count(*) FROM pg_prepared_xacts") == [(0,)], why


POINTS = ("source.after_checkpoint@4", "worker.after_snapshot@7", "sink.after_pre_commit@10",
          "coordinator.before_manifest@13", "coordinator.after_manifest@16",
          "sink.after_commit@19")  # fmt: skip


@pytest.mark.slow
def test_cdc_exactly_once_through_a_crash_at_every_named_fault_point(
    tmp_path: Path, dsn: str
) -> None:
    """Each step of the epoch protocol killed once (a coordinator that dies is started again,
    as an operator would), while a writer changes the table: the copy equals the table."""
    cdc_writer.create(dsn, rows=5_000)
    query(dsn, "DROP TABLE IF EXISTS items_copy")
    job = cdc_job(tmp_path, dsn, "items_copy", PASS)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {"RINGSTREAM_FAULT": ",".join(POINTS), "RINGSTREAM_FAULT_MARKS": str(marks)}
    w = writer(dsn, seed=11, transactions=1_200, pause_ms=10)
    try:
        for _ in range(10):  # a run per coordinator death, then one to the end
            with EngineRun(job, env=env) as run:
                # stop only once every point fired: one left would kill a child mid-drain
                while run.proc.poll() is None and (w.poll() is None
                                                   or len(list(marks.iterdir())) < len(POINTS)
                                                   or not target_matches(dsn, "items_copy")):
                    time.sleep(0.2)  # fmt: skip
                if run.proc.poll() is None:
                    stop(run)
                    break
        assert w.wait(60) == 0
    finally:
        w.kill()
        w.wait()
    fired = sorted(p.name for p in marks.iterdir())
    assert len(fired) == len(POINTS), fired
    assert target_matches(dsn, "items_copy")
    assert query(dsn, "SELECT count(*) FROM pg_prepared_xacts") == [(0,)]


@pytest.mark.slow
def test_snapshot_killed_half_way_resumes_after_the_committed_chunks(
    tmp_path: Path, dsn: str
) -> None:
    """A 200,000-row table read in 1,000-row chunks; the whole engine killed part-way; the
    rerun reads only what was not committed (a new snapshot for the rest), while a writer
    changes rows on both sides of the cut: the copy equals the table."""
    cdc_writer.create(dsn, rows=200_000)
    query(dsn, "DROP TABLE IF EXISTS items_copy")
    # short epochs: a 200 ms epoch could commit most of the snapshot at once, and the
    # kill then found it finished (nothing to resume)
    job = cdc_job(tmp_path, dsn, "items_copy", PASS, chunk_rows=1_000, interval_ms=50)
    w = writer(dsn, seed=3, transactions=400, pause_ms=20)
    # killed once some chunks are committed; "(resumed)" below proves it was mid-snapshot
    with EngineRun(job) as run:
        wait_for(lambda: copied(dsn) >= 20_000, "a half-done snapshot", run)
        _kill_coordinator(run)
    first = copied(dsn)
    assert first < 200_000, "the snapshot was committed whole before the kill landed"
    with EngineRun(job) as run:
        assert w.wait(120) == 0
        converge(dsn, "items_copy", run)
        stop(run)
    assert "(resumed)" in run.stderr, run.stderr[-2000:]
    summary = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("done")]
    assert summary, run.stderr[-3000:]
    events = int(summary[-1].split("): ")[1].split()[0].replace(",", ""))  # the rerun read
    assert events < 200_000 - first // 2, (first, events, summary)
    assert target_matches(dsn, "items_copy")


def copied(dsn: str) -> int:
    if not query(dsn, "SELECT to_regclass('items_copy')")[0][0]:
        return 0
    return int(query(dsn, "SELECT count(*) FROM items_copy")[0][0])


def wait_for(ok: Callable[[], bool], what: str, run: EngineRun, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert run.proc.poll() is None, f"the run ended before {what}\n{run.stderr[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s\n{run.stderr[-3000:]}"
        time.sleep(0.05)


def slot_lag(dsn: str) -> int:
    rows = query(dsn, "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM "
                      "pg_replication_slots WHERE slot_name = 'ringstream_cdc'")  # fmt: skip
    return int(rows[0][0]) if rows else 0


def test_lag_grows_while_the_engine_is_stopped_and_returns_to_zero(
    tmp_path: Path, dsn: str
) -> None:
    cdc_writer.create(dsn, rows=100)
    query(dsn, "DROP TABLE IF EXISTS items_copy")
    job = cdc_job(tmp_path, dsn, "items_copy", PASS)
    text = job.pipeline.read_text().replace("enabled = false", "enabled = true\nport = 0")
    job.pipeline.write_text(text.replace('chunk_rows = 2000', 'chunk_rows = 2000\n'
                                         'lag_interval_ms = 100'))  # fmt: skip
    with EngineRun(job) as run:
        converge(dsn, "items_copy", run)
        pids = run.attempts[0]
        for pid in pids.values():
            os.kill(pid, signal.SIGSTOP)
        try:
            cdc_writer.write(dsn, seed=9, transactions=200)
            stopped = slot_lag(dsn)
            assert stopped > 20_000, stopped
        finally:
            for pid in pids.values():
                os.kill(pid, signal.SIGCONT)
        converge(dsn, "items_copy", run)
        wait_for(lambda: slot_lag(dsn) < 4_096, "a lag back near zero", run, timeout=30)
        url = next(line.split()[-1] for line in run.lines if "/metrics" in line)
        wait_for(lambda: _lag_metric(url) is not None and _lag_metric(url) < 4_096,
                 "the lag metric back near zero", run, timeout=30)  # fmt: skip
        stop(run)


def _lag_metric(url: str) -> float | None:
    with urllib.request.urlopen(url, timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("ringstream_connector_lag{") and 'unit="bytes"' in line:
                return float(line.split()[-1])
    return None


# --- the example the README points to --------------------------------------------------------


def test_example_postgres_cdc_runs_as_its_readme_says(tmp_path: Path, dsn: str) -> None:
    """examples/postgres_cdc/README.md: schema.sql, the run, changes.sql; the totals table
    then equals the SQL over the orders table."""
    example = ROOT / "examples" / "postgres_cdc"
    query(dsn, "DROP TABLE IF EXISTS orders, orders_by_customer")
    psql = ["psql", dsn, "-q", "-v", "ON_ERROR_STOP=1", "-f"]
    subprocess.run([*psql, str(example / "schema.sql")], check=True, timeout=60)
    env = {**os.environ, "RINGSTREAM_SOURCES__0__DSN": dsn, "RINGSTREAM_SINKS__0__DSN": dsn}
    args = [sys.executable, "-m", "engine", "validate", str(example / "pipeline.toml")]
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("ok: pipeline 'orders_cdc'"), done
    want = ("SELECT customer, count(*), sum(amount) FROM orders GROUP BY customer "
            "ORDER BY customer")  # fmt: skip
    got = "SELECT customer, orders, total FROM orders_by_customer ORDER BY customer"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", str(example / "pipeline.toml")],
                            cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        for step in ("snapshot", "changes"):
            if step == "changes":
                subprocess.run([*psql, str(example / "changes.sql")], check=True, timeout=60)
            deadline = time.monotonic() + 60
            while not (query(dsn, "SELECT to_regclass('orders_by_customer')")[0][0]
                       and query(dsn, got) == query(dsn, want)):  # fmt: skip
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, f"no match after the {step}"
                time.sleep(0.2)
        customers = [r[0] for r in query(dsn, got)]
        assert "customer-3" not in customers and "customer-new" in customers
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
