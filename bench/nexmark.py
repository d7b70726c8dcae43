"""Nexmark q0-q8 through the engine, and in one process with no IPC, in one run.

    python -m bench.nexmark                          # a table, 50 M model events per query
    python -m bench.nexmark --json --events 1000000 --repeat 5 --queries q0,q5
    python -m bench.nexmark --out bench/results/nexmark-2cpu.json

Each query is its example pipeline, ``examples/nexmark/<q>.toml``, with every
source's ``events`` set to ``--events`` model events (all kinds: 1 person : 3
auctions : 46 bids, so the bid stream of 50 M model events is 46 M rows and
q8's person and auction streams together 4 M rows) and nothing else changed.
Engine: ``python -m engine run`` as a subprocess with 1 and 2 Ring 0 workers
(``bench.pipeline.topologies``; topologies printed with the result); its figure
is the engine's own (source rows from the children being ready to the last
child done). Baseline: the same pipeline in one process pinned to one core
(``engine.local``): the same sources, operators and sinks, one after the other,
no rings. Both run through ``bench.engine_runs``, with sink paths and
checkpoints in fresh temporary directories.

Placement on 2 CPUs: the 1-worker run keeps the sources on the single process's
CPU and the worker on the other, so the worker's core is never a source's. The
sinks go beside the sources for a join (q3, q4, q6, q8: the join makes the worker
the busiest process), beside the worker otherwise (the generator is the heavy
stage); ``placement`` in the JSON says which.

Figures: ``events_per_s`` is source rows per second — the rows the query reads,
which is what the engine counts; ``model_events_per_s`` is ``--events`` over
the same time (the Nexmark convention: the generator's events of every kind).
Each figure is the median of ``--repeat`` rounds; a round runs every query and
variant once, interleaved, so drift on a shared machine hits all alike. The
1-minute load average before and after (``load_average``) says how shared the
machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from bench import engine_runs, machine
from bench.pipeline import topologies

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "nexmark"
QUERIES = ("q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8")
BASELINE = "baseline"

Figure = dict[str, float]


def pipeline_path(query: str) -> Path:
    return EXAMPLES / f"{query}.toml"


def overrides(query: str, events: int) -> dict[str, str]:
    """``events`` model events for every source of ``query``'s pipeline."""
    from engine import pipeline as pipeline_mod

    sources = pipeline_mod.load(pipeline_path(query), {}).sources
    return {f"RINGSTREAM_SOURCES__{i}__EVENTS": str(events) for i in range(len(sources))}


def run_variant(
    query: str, variant: str, events: int, topo: dict[int, list[int]],
    connectors: list[int] | None = None, sinks_with_sources: bool = False,
) -> Figure:  # fmt: skip
    """One run: ``variant`` is a worker count ("1", "2") or ``BASELINE``."""
    env = overrides(query, events)
    if variant == BASELINE:
        return engine_runs.run_local(pipeline_path(query), env)
    workers = topo[int(variant)]
    cpus = machine.available_cpus()
    if connectors is None and variant == "1" and len(cpus) == 2:
        connectors = two_cpu_connectors(query, workers[0], cpus[-1], sinks_with_sources)
    return engine_runs.run_engine(pipeline_path(query), workers, env, connectors=connectors)


def sinks_belong_with_sources(query: str) -> bool:
    """For the 1-worker run on 2 CPUs: do the sinks share the sources' CPU rather than the
    worker's? Yes for a join: its worker is the busiest process by far (q4 at 50 M events:
    worker 6.3 CPU-s, sources 1.3, sink 0.9; q8: 1.2, 0.3, 0.55), so the sinks go beside
    the sources. Otherwise the sources are the heavy stage (Nexmark generation) and the
    sinks go beside the worker. A calibration run was tried
    instead: at a few million events its CPU seconds are mostly start-up, and q5's
    choice flipped between two runs."""
    from engine import pipeline as pipeline_mod

    return pipeline_mod.load(pipeline_path(query), {}).query.join is not None


def two_cpu_connectors(
    query: str, worker: int, sources: int, sinks_with_sources: bool
) -> list[int]:
    """Connector CPUs (sinks, then each source instance) for the 1-worker run on 2 CPUs:
    every source on ``sources``, so the worker's core is not shared with a source's (the
    issue's condition), and the sinks beside the worker or (``sinks_with_sources``) the
    sources. ``sources`` is the single process's CPU: in a query whose source does nearly
    all the work (q0's generator), the two then run on the same core."""
    from engine import pipeline as pipeline_mod

    p = pipeline_mod.load(pipeline_path(query), {})
    sinks = sources if sinks_with_sources else worker
    return [sinks] * len(p.sinks) + [sources] * sum(s.parallelism for s in p.sources)


def median(runs: list[Figure], model_events: int) -> dict[str, Any]:
    rate = statistics.median(r["events_per_s"] for r in runs)
    elapsed = statistics.median(r["elapsed_s"] for r in runs)
    return {
        "events_per_s": round(rate),
        "model_events_per_s": round(model_events / elapsed) if elapsed > 0 else 0,
        "elapsed_s": round(elapsed, 3),
        "rows": int(runs[0]["events"]),
        "runs_events_per_s": [round(r["events_per_s"]) for r in runs],
    }


def ratio_name(variant: str) -> str:
    return f"{variant}_worker{'' if variant == '1' else 's'}_vs_baseline"


def measure(
    queries: list[str], events: int, repeat: int, topo: dict[int, list[int]],
    connectors: list[int] | None = None,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    variants = [*(str(n) for n in topo), BASELINE]
    runs: dict[str, dict[str, list[Figure]]] = {q: {v: [] for v in variants} for q in queries}
    two_cpus = connectors is None and len(machine.available_cpus()) == 2
    with_sources = {q: two_cpus and sinks_belong_with_sources(q) for q in queries}
    for r in range(repeat):
        for q in queries:
            for v in variants:
                runs[q][v].append(run_variant(q, v, events, topo, connectors, with_sources[q]))
            latest = {v: round(runs[q][v][-1]["events_per_s"] / 1e6, 2) for v in variants}
            print(f"round {r + 1}/{repeat} {q} (M rows/s): {latest}", file=sys.stderr, flush=True)
    out: dict[str, dict[str, Any]] = {}
    for q in queries:
        figs = {v: median(runs[q][v], events) for v in variants}
        base = figs.pop(BASELINE)
        out[q] = {
            "placement": {"sinks_with_sources": with_sources[q]},
            "engine": figs,
            "baseline_single_process": base,
            "ratios": {
                ratio_name(v): round(f["events_per_s"] / base["events_per_s"], 2)
                for v, f in figs.items()
            },
        }
    return out


def table(result: dict[str, Any]) -> str:
    c = result["cpus"]
    lines = [
        f"machine: {c['count']} cpus ({c['model']}, available {c['available']}); pinning "
        f"{c['pinning']}; {result['events']:,} model events per query, median of "
        f"{result['repeat']}; load average {result['load_average'][0]} before, "
        f"{result['load_average'][1]} after",
        "M rows/s (the source rows a query reads), seconds in brackets; ratio = engine / "
        "single process",
        f"{'query':6}{'rows':>11}  {'1 worker':>15}  {'2 workers':>15}  "
        f"{'single process':>15}  {'1w/base':>7}  {'2w/base':>7}",
    ]
    for q, fig in result["queries"].items():
        cells = [fig["engine"]["1"], fig["engine"]["2"], fig["baseline_single_process"]]
        shown = [f"{f['events_per_s'] / 1e6:6.2f} ({f['elapsed_s']:5.2f} s)" for f in cells]
        lines.append(
            f"{q:6}{cells[0]['rows']:>11,}  {shown[0]:>15}  {shown[1]:>15}  {shown[2]:>15}  "
            f"{fig['ratios'][ratio_name('1')]:>7.2f}  {fig['ratios'][ratio_name('2')]:>7.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.nexmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--json", action="store_true", help="print the JSON object, not the table")
    ap.add_argument("--events", type=int, default=50_000_000, help="model events per query")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; figures are medians")
    ap.add_argument("--queries", default=",".join(QUERIES), help="comma-separated, e.g. q0,q5")
    ap.add_argument("--out", help="also write the JSON object to this file")
    ap.add_argument(
        "--connectors", default="",
        help="CPUs of the connector processes, sinks first, then each source instance "
        "(default: the first CPU for all; on 2 CPUs the 1-worker run puts its worker and "
        "sinks on the first CPU and its sources alone on the single process's CPU)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    connectors = [int(c) for c in args.connectors.split(",") if c.strip()] or None
    queries = [q.strip() for q in args.queries.split(",") if q.strip()]
    unknown = sorted(set(queries) - set(QUERIES))
    if unknown or not queries:
        ap.error(f"--queries: unknown {unknown or queries}; known: {', '.join(QUERIES)}")
    if args.events < 1 or args.repeat < 1:
        ap.error(f"--events={args.events} and --repeat={args.repeat} must be >= 1")
    topo = topologies()
    if connectors is None and len(machine.available_cpus()) == 2:
        topo[1] = machine.available_cpus()[:1]  # the sources get the single process's CPU
    pinning: dict[str, Any] = {f"{n} worker(s)": w for n, w in topo.items()}
    pinning["single process"] = machine.available_cpus()[-1]
    pinning["connectors (sinks, then sources)"] = connectors or (
        "the 1-worker run: sources on the single process's CPU, sinks beside the sources for "
        "a join, else beside the worker; else the first CPU"
        if len(machine.available_cpus()) == 2 else [machine.available_cpus()[0]]
    )
    load_before = os.getloadavg()
    result: dict[str, Any] = {
        "cpus": machine.describe(pinning),
        "events": args.events,
        "repeat": args.repeat,
        "queries": measure(queries, args.events, args.repeat, topo, connectors),
    }
    # other work on the machine: the 1-minute load average before the first run and after the
    # last (the latter counts this benchmark's own processes too: about 2 on 2 CPUs)
    result["load_average"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
