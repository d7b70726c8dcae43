"""The PostgreSQL sink against a bare ADBC bulk load into the same server, in one run.

    python -m bench.postgres_sink                    # 2 M rows, a table
    python -m bench.postgres_sink --json --out bench/results/postgres-sink-2cpu.json

Starts a throwaway server (``scripts/postgres``), then, interleaved, median of
``--repeat``:

* **ADBC alone**: the generator's batches (``ts``, ``key``, ``value``) bulk-loaded
  with ``adbc_ingest`` into a fresh table in one transaction, committed — the
  floor any Arrow → PostgreSQL path pays.
* **sink alone**: the same batches through ``PostgresSink`` in this process, one
  epoch per 1 M rows: begin, write, ``pre_commit`` (PREPARE TRANSACTION),
  ``commit_epoch`` (COMMIT PREPARED) — what exactly-once adds to the load.
* **engine**: ``python -m engine run`` of generator → PostgreSQL sink, exactly-once,
  a checkpoint every second, 1 worker: rows/s as the engine times it.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import cli, engine_runs, machine

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = """
[pipeline]
name = "pg_bench"
delivery = "exactly-once"
[checkpoint]
interval_ms = 1000
[metrics]
enabled = false
[[sources]]
name = "events"
type = "generator"
events = {rows}
keys = 10000
event_time = "ts"
[[sinks]]
name = "out"
type = "postgres"
dsn = "{dsn}"
table = "{table}"
"""


def batches(rows: int) -> list[Any]:
    from connectors.generator import generate

    return [generate(1, s, min(rows, s + 65_536), 10_000, 1_000_000)
            for s in range(0, rows, 65_536)]  # fmt: skip


def adbc_alone(dsn: str, data: list[Any], table: str) -> float:
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow as pa

    with adbc.connect(dsn) as conn:
        t = time.perf_counter()
        with conn.cursor() as cur:
            cur.adbc_ingest(table, pa.Table.from_batches(data), mode="create_append")
        conn.commit()
        return time.perf_counter() - t


def sink_alone(dsn: str, data: list[Any], table: str) -> float:
    from connectors.base import ConnectorConfig
    from connectors.postgres.sink import PostgresSink

    sink = PostgresSink()
    sink.open(ConnectorConfig("out", {"dsn": dsn, "table": table}, schema=data[0].schema))
    sink.rollback_epoch(1)
    t = time.perf_counter()
    epoch, rows = 1, 0
    sink.begin_epoch(epoch)
    for b in data:
        sink.write_batch(b)
        rows += b.num_rows
        if rows >= 1_000_000:
            sink.commit_epoch(epoch, sink.pre_commit(epoch))
            epoch, rows = epoch + 1, 0
            sink.begin_epoch(epoch)
    sink.commit_epoch(epoch, sink.pre_commit(epoch))
    took = time.perf_counter() - t
    sink.close()
    return took


def main(argv: list[str] | None = None) -> int:
    args = cli.parser("bench.postgres_sink", __doc__, rows=2_000_000).parse_args(argv)
    cluster = Path(tempfile.mkdtemp(prefix="ringstream-pg-bench-"))
    script = ROOT / "scripts" / "postgres"
    dsn = subprocess.run([str(script), "start", str(cluster)], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    try:
        data = batches(args.rows)
        runs: dict[str, list[float]] = {"adbc": [], "sink": [], "engine": []}
        with tempfile.TemporaryDirectory(prefix="rs-pg-") as d:
            for r in range(args.repeat):
                runs["adbc"].append(args.rows / adbc_alone(dsn, data, f"adbc_{r}"))
                runs["sink"].append(args.rows / sink_alone(dsn, data, f"sink_{r}"))
                pipeline = Path(d) / f"p{r}.toml"
                pipeline.write_text(PIPELINE.format(rows=args.rows, dsn=dsn, table=f"engine_{r}"))
                cpus = machine.available_cpus()
                runs["engine"].append(
                    engine_runs.run_engine(pipeline, [cpus[-1]])["events_per_s"])
                print(f"round {r}: " + ", ".join(f"{k} {v[-1] / 1e6:.2f} M rows/s"
                                                 for k, v in runs.items()),
                      file=sys.stderr, flush=True)  # fmt: skip
    finally:
        subprocess.run([str(script), "stop", str(cluster)], check=False)
    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "cpus": machine.describe({"worker": machine.available_cpus()[-1]}),
        "rows": args.rows,
        "rows_per_s": {k: round(v) for k, v in med.items()},
        "runs_rows_per_s": {k: [round(x) for x in v] for k, v in runs.items()},
        "ratios": {"sink_vs_adbc": round(med["sink"] / med["adbc"], 2),
                   "engine_vs_adbc": round(med["engine"] / med["adbc"], 2)},  # fmt: skip
    }
    if not cli.emit(result, args):
        c = result["cpus"]
        print(f"machine: {c['count']} cpus ({c['model']}); {args.rows:,} rows, median of "
              f"{args.repeat}")  # fmt: skip
        for k, v in med.items():
            print(f"{k:7}: {v / 1e6:.2f} M rows/s")
        print(f"ratios: {result['ratios']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
