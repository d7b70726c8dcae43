"""W1 — Parquet in, 1 s tumbling count and sum per key, Parquet out — against DuckDB.

    python -m bench.w1                       # 10 M events, a table
    python -m bench.w1 --events 50000000 --json --out bench/results/w1-2cpu.json

The input: the generator's events (``ts`` ms, ``key`` of 10,000 integers, ``value``)
written once to one Parquet file. In one run, interleaved, median of ``--repeat``:

* **engine**: ``python -m engine run`` with 1 worker (the worker alone on the last
  CPU; source, sink and coordinator on the first), files source → window →
  files sink; events/s as the engine times it, and the command's wall time;
  CPU per event and peak RSS of each process (from the run's summary).
* **DuckDB, one thread**: the same query over the same Parquet file, written to
  Parquet (``COPY (...) TO``).
* **window step alone** vs **DuckDB over in-memory Arrow** (one thread, the same
  aggregation): the engine's ``WindowAggregate`` over the batches already in
  memory, with the dense-key path (``ring0.operators.dense``) and without it.
* **stages** (ns per event, in this process): read (Parquet → batches), split
  (hash into 2 workers), window, sink (Parquet write of the output). The two
  window steps and DuckDB's in-memory aggregation are each the best of
  ``PASSES`` passes over the same batches (the first pass also pays for the
  memory it touches first; the others show the noise of a shared machine).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import cli, engine_runs, machine

ROOT = Path(__file__).resolve().parents[1]
KEYS = 10_000
PIPELINE = """
[pipeline]
name = "w1"
[checkpoint]
interval_ms = 0
[metrics]
enabled = false
[[sources]]
name = "events"
type = "files"
path = "{input}"
format = "parquet"
event_time = "ts"
[[query.steps]]
op = "window"
key = "key"
window = {{ type = "tumbling", size_ms = 1000 }}
aggregates = ["count", "sum(value)"]
[[sinks]]
name = "out"
type = "files"
path = "{out}"
format = "parquet"
"""
SQL = (
    "SELECT ts - ts % 1000 AS window_start, ts - ts % 1000 + 1000 AS window_end, key, "
    "count(*) AS count, sum(value) AS sum_value FROM {src} GROUP BY ALL"
)


def make_input(directory: Path, events: int) -> Path:
    import pyarrow.parquet as pq

    from connectors.generator import generate

    path = directory / "in" / "w1.parquet"
    path.parent.mkdir(parents=True)
    with pq.ParquetWriter(path, generate(1, 0, 1, KEYS, 1_000_000).schema) as w:
        for start in range(0, events, 1 << 20):
            w.write_batch(generate(1, start, min(events, start + (1 << 20)), KEYS, 1_000_000))
    return path


def run_engine(path: Path, tmp: Path, worker: list[int]) -> dict[str, Any]:
    pipeline = tmp / "w1.toml"
    out = tmp / "out-engine"
    shutil.rmtree(out, ignore_errors=True)  # each run writes its own output
    pipeline.write_text(PIPELINE.format(input=path.parent, out=out))
    started = time.perf_counter()
    r = engine_runs.run_engine(pipeline, worker, {"RINGSTREAM_SINKS__0__PATH": str(out)})
    r["wall_s"] = time.perf_counter() - started
    return r


def run_duckdb(path: Path, tmp: Path) -> dict[str, float]:
    cpu = machine.available_cpus()[-1]
    code = (
        f"import os; os.sched_setaffinity(0, {{{cpu}}})\n"
        "import duckdb, sys, time\n"
        "con = duckdb.connect(); con.execute('SET threads = 1')\n"
        "t = time.perf_counter()\n"
        f"con.execute(\"COPY ({SQL.format(src=repr(str(path)))}) TO "
        f"'{tmp / 'out-duckdb.parquet'}' (FORMAT parquet)\")\n"
        "print(time.perf_counter() - t)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return {"elapsed_s": float(done.stdout.strip().splitlines()[-1])}


PASSES = 3  # of the window steps and of DuckDB in memory: the best is kept


def stages(path: Path, tmp: Path) -> dict[str, float]:
    """ns per event of each stage, in this process, over the same input."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine import memory
    from ring0.operators import dense
    from ring0.operators.aggregate_spec import parse_aggregate
    from ring0.operators.window import WindowAggregate, WindowSpec
    from ring1.partition import split

    memory.tune()  # as in every engine process
    pa.set_cpu_count(1)

    def read() -> Any:
        return pq.ParquetFile(path, pre_buffer=False).iter_batches(
            batch_size=65_536, use_threads=False
        )

    batches = list(read())
    n = sum(b.num_rows for b in batches)
    t = time.perf_counter()
    for _ in read():  # streaming: each batch dropped, as the source sends it on
        pass
    out: dict[str, float] = {"read": (time.perf_counter() - t) / n * 1e9}
    t = time.perf_counter()
    for b in batches:
        split(b, "key", 2)
    out["split (2 workers)"] = (time.perf_counter() - t) / n * 1e9

    def window() -> tuple[float, list[pa.RecordBatch]]:
        aggs = [parse_aggregate(a) for a in ("count", "sum(value)")]
        op = WindowAggregate(["key"], "ts", WindowSpec("tumbling", size_ms=1000), aggs,
                             batches[0].schema)  # fmt: skip
        rows: list[pa.RecordBatch] = []
        t = time.perf_counter()
        for b in batches:
            op.process(b)
            rows += op.on_watermark(int(b.column(0)[-1].as_py()) - 1)
        rows += op.finish()
        return (time.perf_counter() - t) / n * 1e9, rows

    out["window (dense path)"] = min(window()[0] for _ in range(PASSES - 1))
    took, rows = window()
    out["window (dense path)"] = min(out["window (dense path)"], took)
    dense.ENABLED = False
    out["window (hash path)"] = min(window()[0] for _ in range(PASSES))
    dense.ENABLED = True
    table = pa.Table.from_batches(batches)
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.register("t", table)

    def duck() -> float:
        t = time.perf_counter()
        con.sql(SQL.format(src="t")).to_arrow_table()
        return (time.perf_counter() - t) / n * 1e9

    out["duckdb in-memory aggregation, 1 thread"] = min(duck() for _ in range(PASSES))
    result = pa.Table.from_batches([r for r in rows if r.num_rows])
    t = time.perf_counter()
    pq.write_table(result, tmp / "out-stage.parquet")
    out["sink (Parquet write of the output)"] = (time.perf_counter() - t) / n * 1e9
    return {k: round(v, 2) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    args = cli.parser("bench.w1", __doc__, events=10_000_000).parse_args(argv)
    cpus = machine.available_cpus()
    worker = [cpus[-1]]
    with tempfile.TemporaryDirectory(prefix="rs-w1-") as d:
        tmp = Path(d)
        path = make_input(tmp, args.events)
        engine, duck = [], []
        for _ in range(args.repeat):
            engine.append(run_engine(path, tmp, worker))
            duck.append(run_duckdb(path, tmp))
            print(f"round: engine {engine[-1]['events_per_s'] / 1e6:.1f} M/s, duckdb "
                  f"{args.events / duck[-1]['elapsed_s'] / 1e6:.1f} M/s",
                  file=sys.stderr, flush=True)  # fmt: skip
        per_stage = stages(path, tmp)
    e_rate = statistics.median(r["events_per_s"] for r in engine)
    d_rate = statistics.median(args.events / r["elapsed_s"] for r in duck)
    last = engine[-1]
    result: dict[str, Any] = {
        "cpus": machine.describe({"worker": worker[0], "source, sink, coordinator": cpus[0]}),
        "events": args.events,
        "engine_events_per_s": round(e_rate),
        "engine_wall_s": round(statistics.median(r["wall_s"] for r in engine), 3),
        "engine_cpu_ns_per_event": {k: round(1e9 * v / args.events, 2)
                                    for k, v in last["cpu_s"].items()},  # fmt: skip
        "engine_max_rss_mb": {k: round(v / 2**20, 1) for k, v in last["max_rss_bytes"].items()},
        "duckdb_1_thread_events_per_s": round(d_rate),
        "duckdb_1_thread_wall_s": round(statistics.median(r["elapsed_s"] for r in duck), 3),
        "stages_ns_per_event": per_stage,
    }
    window_rate = 1e9 / per_stage["window (dense path)"]
    duck_mem = 1e9 / per_stage["duckdb in-memory aggregation, 1 thread"]
    result["ratios"] = {
        "engine_vs_duckdb_parquet": round(e_rate / d_rate, 2),
        "window_step_vs_duckdb_in_memory": round(window_rate / duck_mem, 2),
        "window_step_events_per_s": round(window_rate),
    }
    if cli.emit(result, args):
        return 0
    c = result["cpus"]
    print(f"machine: {c['count']} cpus ({c['model']}); pinning {c['pinning']}; "
          f"{args.events:,} events, median of {args.repeat}; pid {os.getpid()}")  # fmt: skip
    print(f"engine, 1 worker: {e_rate / 1e6:.1f} M events/s ({result['engine_wall_s']} s wall); "
          f"CPU ns/event {result['engine_cpu_ns_per_event']}; "
          f"peak RSS MB {result['engine_max_rss_mb']}")  # fmt: skip
    print(f"duckdb, 1 thread, same Parquet: {d_rate / 1e6:.1f} M events/s "
          f"({result['duckdb_1_thread_wall_s']} s)")  # fmt: skip
    for k, v in per_stage.items():
        print(f"  {k}: {v} ns/event")
    print(f"ratios: {result['ratios']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
