"""Scaling: W1 and Nexmark q5 with 1, 2, 4, … workers, up to the cores this machine has.

    python -m bench.scaling                      # a table
    python -m bench.scaling --json --out bench/results/scaling-2cpu.json

For each worker count N (1, 2, 4, … up to the available CPUs minus the one kept for
the coordinator, source and sink; at least 1 and 2) the workers are pinned to the
CPUs after the first (wrapping around on a small machine); the source keeps one
process. Reported per run: events/s as the engine
times it, CPU ns per event of each role (source, worker, sink: summed over that
role's processes, from the run's summary), and efficiency — events/s per worker
over the 1-worker figure. On a machine with fewer cores than processes the extra
workers share CPUs, which the efficiency shows.

The per-stage CPU lets you project a larger machine: with S ns/event in the
sources and W ns/event in the workers, N workers and as many source processes
can go at most ``1e9 / max(S / N, W / N)`` events/s when each has a core.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import cli, engine_runs, machine
from bench.w1 import PIPELINE as W1
from bench.w1 import make_input

ROOT = Path(__file__).resolve().parents[1]
Q5 = ROOT / "examples" / "nexmark" / "q5.toml"


def worker_counts() -> list[int]:
    cpus = len(machine.available_cpus())
    counts, n = [1, 2], 4
    while n <= max(1, cpus - 1):
        counts.append(n)
        n *= 2
    return counts


def run(pipeline: Path, workers: list[int], extra: dict[str, str]) -> dict[str, Any]:
    r = engine_runs.run_engine(pipeline, workers, extra)
    n = r["events"]
    r["cpu_ns_per_event"] = {k: round(1e9 * v / n, 2) for k, v in r["cpu_s"].items()}
    return r


def main(argv: list[str] | None = None) -> int:
    args = cli.parser("bench.scaling", __doc__, events=10_000_000).parse_args(argv)
    cpus = machine.available_cpus()
    result: dict[str, Any] = {"cpus": machine.describe({"workers": None}), "events": args.events,
                              "workloads": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="rs-scaling-") as d:
        tmp = Path(d)
        w1 = tmp / "w1.toml"
        w1.write_text(W1.format(input=make_input(tmp, args.events).parent, out=tmp / "out"))
        workloads = {"W1": (w1, {}), "nexmark q5": (Q5, {
            "RINGSTREAM_SOURCES__0__EVENTS": str(args.events)})}  # fmt: skip
        for name, (pipeline, env) in workloads.items():
            rows = []
            for n in worker_counts():
                workers = [cpus[(1 + i) % len(cpus)] for i in range(n)]
                runs = [run(pipeline, workers, env) for _ in range(args.repeat)]
                best = statistics.median(r["events_per_s"] for r in runs)
                rows.append({
                    "workers": n, "worker_cpus": workers,
                    "events_per_s": round(best),
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
            print(f"{name:11} {r['workers']:3} worker(s) on {r['worker_cpus']}: "
                  f"{r['events_per_s'] / 1e6:6.2f} M events/s, efficiency {r['efficiency']}, "
                  f"CPU ns/event {r['cpu_ns_per_event']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
