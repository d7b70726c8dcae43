"""Scaling: W1 and Nexmark q5 with 1, 2, 4, … workers, up to the cores this machine has.

    python -m bench.scaling                      # a table
    python -m bench.scaling --json --out bench/results/scaling-2cpu.json

For each worker count N the source runs N instances (``parallelism = N``), so the
read and the split grow with the workers. Where the machine has ``2N + 1`` CPUs
each process has its own: the coordinator and the sink on the first CPU, the N
source instances on the next N, the N workers on the N after; worker counts are
1, 2, 4, … and the largest N that fits. On a smaller machine (N = 1 and 2 are
always run) the connectors share the first CPU and the workers wrap around the
rest, which the efficiency then shows. W1's input is N Parquet files per run,
filled round-robin with 64 K-event chunks (every file spans the whole event time,
so the instances' watermarks move together) and named so that the files source's
``crc32(name) % N`` gives each instance one file. Reported per run: events/s as
the engine times it, CPU ns per event of each role (source, worker, sink: summed
over that role's processes, from the run's summary), and efficiency — events/s
per worker over the 1-worker figure.

The per-stage CPU lets you project a larger machine: with S ns/event in the
sources and W ns/event in the workers, N workers and as many source processes
can go at most ``1e9 / max(S / N, W / N)`` events/s when each has a core.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

from bench import cli, engine_runs, machine
from bench.w1 import KEYS
from bench.w1 import PIPELINE as W1

ROOT = Path(__file__).resolve().parents[1]
Q5 = ROOT / "examples" / "nexmark" / "q5.toml"


def worker_counts(cpus: int) -> list[int]:
    counts, n = [1, 2], 4
    while 2 * n + 1 <= cpus:
        counts.append(n)
        n *= 2
    if (cpus - 1) // 2 > counts[-1]:
        counts.append((cpus - 1) // 2)
    return counts


def layout(n: int, cpus: list[int]) -> tuple[list[int], list[int]]:
    """(connector CPUs: the sink's then each source instance's, worker CPUs) for N."""
    if 2 * n + 1 <= len(cpus):
        return [cpus[0], *cpus[1 : 1 + n]], cpus[1 + n : 1 + 2 * n]
    return [cpus[0]], [cpus[(1 + i) % len(cpus)] for i in range(n)]


def split_input(directory: Path, events: int, n: int) -> Path:
    """W1's events in ``n`` Parquet files, one per source instance (see the docstring)."""
    import pyarrow.parquet as pq

    from connectors.generator import generate

    directory.mkdir(parents=True)
    names = []
    for j in range(n):
        k = 0
        while zlib.crc32(f"w1-{j}-{k}.parquet".encode()) % n != j:
            k += 1
        names.append(f"w1-{j}-{k}.parquet")
    chunk, schema = 1 << 16, generate(1, 0, 1, KEYS, 1_000_000).schema
    writers = [pq.ParquetWriter(directory / name, schema) for name in names]
    for c, start in enumerate(range(0, events, chunk)):
        writers[c % n].write_batch(generate(1, start, min(events, start + chunk), KEYS, 1_000_000))
    for w in writers:
        w.close()
    return directory


def run(pipeline: Path, n: int, cpus: list[int], extra: dict[str, str]) -> dict[str, Any]:
    connectors, workers = layout(n, cpus)
    env = {**extra, "RINGSTREAM_SOURCES__0__PARALLELISM": str(n)}
    r = engine_runs.run_engine(pipeline, workers, env, connectors=connectors)
    n_events = r["events"]
    r["cpu_ns_per_event"] = {k: round(1e9 * v / n_events, 2) for k, v in r["cpu_s"].items()}
    r["worker_cpus"], r["connector_cpus"] = workers, connectors
    return r


def main(argv: list[str] | None = None) -> int:
    args = cli.parser("bench.scaling", __doc__, events=10_000_000).parse_args(argv)
    cpus = machine.available_cpus()
    result: dict[str, Any] = {"cpus": machine.describe({"workers": None}), "events": args.events,
                              "workloads": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="rs-scaling-") as d:
        tmp = Path(d)
        for name in ("W1", "nexmark q5"):
            rows = []
            for n in worker_counts(len(cpus)):
                if name == "W1":
                    pipeline, env = tmp / f"w1-{n}.toml", {}
                    inp = split_input(tmp / f"in-{n}", args.events, n)
                    pipeline.write_text(W1.format(input=inp, out=tmp / "out"))
                else:
                    pipeline, env = Q5, {"RINGSTREAM_SOURCES__0__EVENTS": str(args.events)}
                runs = [run(pipeline, n, cpus, env) for _ in range(args.repeat)]
                best = statistics.median(r["events_per_s"] for r in runs)
                rows.append({
                    "workers": n, "source_instances": n, "worker_cpus": runs[-1]["worker_cpus"],
                    "connector_cpus": runs[-1]["connector_cpus"], "events_per_s": round(best),
                    "cpu_ns_per_event": runs[-1]["cpu_ns_per_event"],
                })  # fmt: skip
                print(f"{name}, {n} worker(s): {best / 1e6:.2f} M events/s", file=sys.stderr,
                      flush=True)  # fmt: skip
            one = rows[0]["events_per_s"]
            for r in rows:
                r["efficiency"] = round(r["events_per_s"] / (one * r["workers"]), 2)
            result["workloads"][name] = rows
    if cli.emit(result, args):
        return 0
    c = result["cpus"]
    print(f"machine: {c['count']} cpus ({c['model']}); {args.events:,} events, median of "
          f"{args.repeat}")  # fmt: skip
    for name, rows in result["workloads"].items():
        for r in rows:
            print(f"{name:11} {r['workers']:3} worker(s) on {r['worker_cpus']}, sources on "
                  f"{r['connector_cpus'][1:] or r['connector_cpus']}: "
                  f"{r['events_per_s'] / 1e6:6.2f} M events/s, efficiency {r['efficiency']}, "
                  f"CPU ns/event {r['cpu_ns_per_event']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
