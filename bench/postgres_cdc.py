"""The PostgreSQL change-capture source against bare reads of the same data, in one run.

    python -m bench.postgres_cdc                     # 5 M-row snapshot, 1 M changes, 60 s lag
    python -m bench.postgres_cdc --json --out bench/results/postgres-cdc-2cpu.json

Starts a throwaway server (``scripts/postgres``). Three parts:

* **snapshot** (median of ``--repeat``): a ``--rows`` table (id, group text,
  amount bigint, price numeric(12,2), note text) read into Arrow with one ADBC
  query (the baseline), then by ``python -m engine run`` of a ``snapshot_only``
  CDC source -> files sink (Parquet), 1 worker: rows/s as the engine times it.
* **live**: ``--changes`` inserts committed as fast as the server takes them
  (transactions of 1,000 rows), held by four slots created before the load;
  then, from each slot: a bare psycopg2 replication loop that receives the
  messages and decodes nothing (the baseline: run first and again last, the
  faster counts); the source alone in this process
  (decoded into Arrow); and the engine (CDC -> files sink, exactly-once,
  checkpoints every 200 ms): from the source's connection until the slot's
  confirmed position (moved only when an epoch commits) passes the load's end.
* **lag**: the engine runs while a writer commits ``--rate`` changes/s
  (transactions of 50) for ``--seconds``; the slot's lag in bytes
  (``pg_current_wal_lsn() - confirmed_flush_lsn``) is sampled every second.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import cli, engine_runs, machine

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = "id bigint PRIMARY KEY, grp text, amount bigint, price numeric(12, 2), note text"
FILL = ("INSERT INTO {table} SELECT g, 'g' || g % 13, g % 1000, (g % 997) / 4.0, "
        "'note ' || g FROM generate_series({start}, {stop}) g")  # fmt: skip
PIPELINE = """
[pipeline]
name = "cdc_bench"
delivery = "exactly-once"
[checkpoint]
interval_ms = {interval}
dir = "{dir}/checkpoints"
[metrics]
enabled = false
[[sources]]
name = "cdc"
type = "postgres_cdc"
dsn = "{dsn}"
tables = ["{table}"]
slot = "{slot}"
snapshot = {snapshot}
snapshot_only = {snapshot_only}
[[sinks]]
name = "out"
type = "files"
path = "{dir}/out"
format = "parquet"
"""


def sql(dsn: str, text: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(text, args or None)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def fill(dsn: str, table: str, rows: int, per_txn: int) -> float:
    """Create ``table`` and insert ``rows`` rows in transactions of ``per_txn``: seconds."""
    sql(dsn, f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({COLUMNS})")
    t = time.perf_counter()
    for start in range(1, rows + 1, per_txn):
        sql(dsn, FILL.format(table=table, start=start, stop=min(rows, start + per_txn - 1)))
    return time.perf_counter() - t


def write_pipeline(d: Path, dsn: str, table: str, slot: str, snapshot_only: bool,
                   interval: int = 1000) -> Path:  # fmt: skip
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{slot}.toml"
    path.write_text(PIPELINE.format(dsn=dsn, table=table, slot=slot, dir=d, interval=interval,
                                    snapshot=str(snapshot_only).lower(),
                                    snapshot_only=str(snapshot_only).lower()))  # fmt: skip
    return path


# -- snapshot ---------------------------------------------------------------------------------
def adbc_read(dsn: str, table: str) -> float:
    import adbc_driver_postgresql.dbapi as adbc

    with adbc.connect(dsn) as conn, conn.cursor() as cur:
        t = time.perf_counter()
        cur.execute(f"SELECT * FROM {table}")
        rows = cur.fetch_arrow_table().num_rows
        took = time.perf_counter() - t
    return rows / took


def snapshot(dsn: str, rows: int, repeat: int, d: Path) -> dict[str, Any]:
    fill(dsn, "snap_items", rows, 500_000)
    sql(dsn, "VACUUM ANALYZE snap_items")
    cpu = machine.available_cpus()[-1]
    runs: dict[str, list[float]] = {"adbc": [], "engine": []}
    for r in range(repeat):
        runs["adbc"].append(adbc_read(dsn, "snap_items"))
        pipeline = write_pipeline(d / f"snap{r}", dsn, "snap_items", f"snap{r}", True)
        got = engine_runs.run_engine(pipeline, [cpu])
        assert got["events"] == rows, got
        runs["engine"].append(got["events_per_s"])
        say(f"snapshot round {r}: " + ", ".join(f"{k} {v[-1] / 1e6:.2f} M rows/s"
                                                for k, v in runs.items()))  # fmt: skip
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {"rows": rows, "rows_per_s": {k: round(v) for k, v in med.items()},
            "runs_rows_per_s": {k: [round(x) for x in v] for k, v in runs.items()},
            "engine_vs_adbc": round(med["engine"] / med["adbc"], 2)}  # fmt: skip


# -- live -------------------------------------------------------------------------------------
def raw_loop(dsn: str, slot: str, publication: str, end_lsn: int) -> tuple[int, float]:
    """Messages received by a bare replication loop until the load's end: (changes, s)."""
    import select

    import psycopg2
    import psycopg2.extras

    conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cur = conn.cursor()
    t = time.perf_counter()
    options = {"proto_version": "1", "publication_names": publication}
    cur.start_replication(slot_name=slot, decode=False, options=options)
    changes = 0
    while True:
        msg = cur.read_message()
        if msg is None:
            select.select([conn], [], [], 0.1)
            continue
        kind = msg.payload[0]
        if kind in (73, 85, 68):  # I U D
            changes += 1
        elif kind == 67 and int.from_bytes(msg.payload[10:18], "big") >= end_lsn:  # C end_lsn
            break
    took = time.perf_counter() - t
    conn.close()
    return changes, took


def source_alone(dsn: str, table: str, slot: str, publication: str, changes: int) -> float:
    from connectors.base import ConnectorConfig
    from connectors.postgres.cdc import PostgresCdcSource

    src = PostgresCdcSource()
    src.open(ConnectorConfig("cdc", {"dsn": dsn, "tables": [table], "slot": slot,
                                     "publication": publication, "snapshot": False}))  # fmt: skip
    t = time.perf_counter()
    rows = 0
    while rows < changes:
        got = src.poll_batch(65_536)
        if got is None:
            src.data_ready(0.05)
        else:
            rows += got.batch.num_rows
    took = time.perf_counter() - t
    src.close()
    return changes / took


def engine_catch_up(dsn: str, pipeline: Path, slot: str, end_lsn: int) -> float:
    """Seconds from the source's replication connection to the slot confirming ``end_lsn``."""
    cpus = machine.available_cpus()
    topo = pipeline.parent / "topology.toml"
    topo.write_text(f"[topology]\ncoordinator = {cpus[0]}\nconnectors = [{cpus[0]}]\n"
                    f"workers = [{cpus[-1]}]\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", str(pipeline), "--topology",
                             str(topo), "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        t0 = None
        while True:
            if proc.poll() is not None:
                why = proc.stderr.read() if proc.stderr else ""
                raise RuntimeError(f"engine run failed: {why}")
            active, confirmed = sql(dsn, "SELECT active_pid, confirmed_flush_lsn - '0/0'::pg_lsn "
                                         "FROM pg_replication_slots WHERE slot_name = %s",
                                    (slot,))[0]  # fmt: skip
            now = time.perf_counter()
            if t0 is None and active is not None:
                t0 = now
            if t0 is not None and int(confirmed) >= end_lsn:
                return now - t0
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def live(dsn: str, changes: int, d: Path) -> dict[str, Any]:
    sql(dsn, f"DROP TABLE IF EXISTS live_items; CREATE TABLE live_items ({COLUMNS})")
    sql(dsn, "ALTER TABLE live_items REPLICA IDENTITY FULL")
    sql(dsn, "CREATE PUBLICATION live_pub FOR TABLE live_items")
    for slot in ("live_raw", "live_source", "live_engine", "live_raw_after"):
        sql(dsn, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    t = time.perf_counter()
    for start in range(1, changes + 1, 1_000):
        sql(dsn, FILL.format(table="live_items", start=start, stop=min(changes, start + 999)))
    produced = changes / (time.perf_counter() - t)
    end = int(sql(dsn, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0])
    got, took = raw_loop(dsn, "live_raw", "live_pub", end)
    assert got == changes, (got, changes)
    raw_first = changes / took
    say(f"live: server took {produced / 1e3:.0f} K changes/s; raw loop {raw_first / 1e3:.0f} K/s")
    alone = source_alone(dsn, "live_items", "live_source", "live_pub", changes)
    say(f"live: source alone {alone / 1e3:.0f} K changes/s")
    pipeline = write_pipeline(d / "live", dsn, "live_items", "live_engine", False, interval=200)
    text = pipeline.read_text().replace('slot = "live_engine"',
                                        'slot = "live_engine"\npublication = "live_pub"')
    pipeline.write_text(text)
    engine = changes / engine_catch_up(dsn, pipeline, "live_engine", end)
    say(f"live: engine end to end {engine / 1e3:.0f} K changes/s")
    got, took = raw_loop(dsn, "live_raw_after", "live_pub", end)  # the first reader of new
    raw = max(raw_first, changes / took)  # WAL may pay for it: the faster of two is the base
    say(f"live: raw loop again {changes / took / 1e3:.0f} K/s")
    return {"changes": changes, "server_insert_rate": round(produced),
            "changes_per_s": {"raw_loop": round(raw), "raw_loop_first": round(raw_first),
                              "source_alone": round(alone),
                              "engine": round(engine)},
            "engine_vs_raw": round(engine / raw, 2)}  # fmt: skip


# -- lag --------------------------------------------------------------------------------------
def lag(dsn: str, rate: int, seconds: int, d: Path) -> dict[str, Any]:
    sql(dsn, f"DROP TABLE IF EXISTS lag_items; CREATE TABLE lag_items ({COLUMNS})")
    pipeline = write_pipeline(d / "lag", dsn, "lag_items", "lag_engine", False, interval=1000)
    cpus = machine.available_cpus()
    topo = d / "topology-lag.toml"
    topo.write_text(f"[topology]\ncoordinator = {cpus[0]}\nconnectors = [{cpus[0]}]\n"
                    f"workers = [{cpus[-1]}]\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", str(pipeline), "--topology",
                             str(topo), "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    stop = threading.Event()
    samples: list[int] = []
    try:
        while not sql(dsn, "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'lag_engine' "
                           "AND active_pid IS NOT NULL"):  # fmt: skip
            if proc.poll() is not None:
                raise RuntimeError("the engine run for the lag part failed")
            time.sleep(0.05)
        writer = threading.Thread(target=_steady_writer, args=(dsn, rate, stop), daemon=True)
        writer.start()
        for _ in range(seconds):
            time.sleep(1.0)
            samples.append(int(sql(dsn, "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)"
                                        "::bigint FROM pg_replication_slots WHERE slot_name = "
                                        "'lag_engine'")[0][0]))  # fmt: skip
        stop.set()
        writer.join()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    samples.sort()
    p95 = samples[max(0, int(len(samples) * 0.95) - 1)]
    return {"rate_changes_per_s": rate, "seconds": seconds,
            "lag_bytes": {"median": samples[len(samples) // 2], "p95": p95,
                          "max": samples[-1]}}  # fmt: skip


def _steady_writer(dsn: str, rate: int, stop: threading.Event) -> None:
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    per_txn, at, next_id = 50, time.perf_counter(), 1
    with conn.cursor() as cur:
        while not stop.is_set():
            cur.execute(FILL.format(table="lag_items", start=next_id, stop=next_id + per_txn - 1))
            next_id += per_txn
            at += per_txn / rate
            time.sleep(max(0.0, at - time.perf_counter()))
    conn.close()


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser("bench.postgres_cdc", __doc__, rows=5_000_000, changes=1_000_000,
                    rate=5_000, seconds=60)  # fmt: skip
    args = ap.parse_args(argv)
    cluster = Path(tempfile.mkdtemp(prefix="ringstream-pg-bench-"))
    script = ROOT / "scripts" / "postgres"
    dsn = subprocess.run([str(script), "start", str(cluster)], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(prefix="rs-cdc-") as tmp:
            d = Path(tmp)
            result = {
                "cpus": machine.describe({"worker": machine.available_cpus()[-1]}),
                "snapshot": snapshot(dsn, args.rows, args.repeat, d),
                "live": live(dsn, args.changes, d),
                "lag": lag(dsn, args.rate, args.seconds, d),
            }
    finally:
        subprocess.run([str(script), "stop", str(cluster)], check=False)
    if not cli.emit(result, args):
        c, s, lv, lg = result["cpus"], result["snapshot"], result["live"], result["lag"]
        print(f"machine: {c['count']} cpus ({c['model']})")
        print(f"snapshot of {s['rows']:,} rows: ADBC {s['rows_per_s']['adbc'] / 1e6:.2f} M/s, "
              f"engine {s['rows_per_s']['engine'] / 1e6:.2f} M/s ({s['engine_vs_adbc']}x)")
        r = lv["changes_per_s"]
        print(f"live, {lv['changes']:,} changes: raw loop {r['raw_loop'] / 1e3:.0f} K/s, source "
              f"{r['source_alone'] / 1e3:.0f} K/s, engine {r['engine'] / 1e3:.0f} K/s "
              f"({lv['engine_vs_raw']}x)")
        print(f"lag at {lg['rate_changes_per_s']:,} changes/s over {lg['seconds']} s: "
              f"{lg['lag_bytes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
