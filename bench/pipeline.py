"""The quickstart workload through the engine, and in one process with no IPC, in one run.

    python -m bench.pipeline            # a table
    python -m bench.pipeline --json     # keys: engine, baseline_single_process, cpus, ratios

Engine: ``python -m engine run examples/quickstart.toml`` as a subprocess with
1 and 2 Ring 0 workers (topologies printed with the result); events/s as the
engine reports it (from the children being ready to the last child done).
Baseline: the same generator batches, the same window operator and the same
files sink, one after the other in a single process pinned to one core (``engine.local``) —
what the engine's process split and rings have to beat. Each figure is the
median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from bench import engine_runs, machine

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.toml"


def topologies() -> dict[int, list[int]]:
    cpus = machine.available_cpus()
    if len(cpus) >= 3:
        return {1: [cpus[1]], 2: [cpus[1], cpus[2]]}
    return {1: [cpus[-1]], 2: [cpus[0], cpus[-1]]}  # 2 CPUs: one worker shares with Ring 1


def run_engine(workers: list[int], events: int, tmp: Path) -> dict[str, float]:
    return engine_runs.run_engine(
        QUICKSTART, workers, {"RINGSTREAM_SOURCES__0__EVENTS": str(events)}
    )


def run_baseline(events: int, tmp: Path) -> dict[str, float]:
    """Generator → window operator → files sink in one pinned process (``engine.local``)."""
    return engine_runs.run_local(QUICKSTART, {"RINGSTREAM_SOURCES__0__EVENTS": str(events)})


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {
        "events_per_s": round(statistics.median(r["events_per_s"] for r in runs)),
        "elapsed_s": round(statistics.median(r["elapsed_s"] for r in runs), 3),
        "runs_events_per_s": [round(r["events_per_s"]) for r in runs],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--events", type=int, default=20_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", help="also write the JSON object to this file")
    args = ap.parse_args(argv)
    topo = topologies()
    result: dict[str, object] = {
        "cpus": machine.describe({f"{n} worker(s)": w for n, w in topo.items()}),  # type: ignore[dict-item]
        "events": args.events,
    }
    engine: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="rs-bench-") as tmp:
        runs: dict[str, list[dict[str, float]]] = {"baseline": []}
        for _ in range(args.repeat):  # interleaved, so drift hits every variant alike
            for n, workers in topo.items():
                runs.setdefault(str(n), []).append(run_engine(workers, args.events, Path(tmp)))
            runs["baseline"].append(run_baseline(args.events, Path(tmp)))
            latest = {k: round(v[-1]["events_per_s"] / 1e6, 2) for k, v in runs.items()}
            print(
                f"round done (M events/s): {latest}",
                file=sys.stderr,
                flush=True,
            )
        for n in topo:
            engine[str(n)] = _median(runs[str(n)])
        baseline = _median(runs["baseline"])
    result["engine"] = engine
    result["baseline_single_process"] = baseline
    one = engine["1"]["events_per_s"]
    result["ratios"] = {
        "1_worker_vs_baseline": round(one / baseline["events_per_s"], 2),
        "2_workers_vs_baseline": round(engine["2"]["events_per_s"] / baseline["events_per_s"], 2),
    }
    result["targets"] = {
        "1 worker >= 50% of single-process baseline": one >= 0.5 * baseline["events_per_s"],
        "1 worker >= 5 M events/s": one >= 5e6,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result))
    else:
        c = result["cpus"]
        print(
            f"machine: {c['count']} cpus ({c['model']}); pinning {c['pinning']}; "  # type: ignore[index]
            f"{args.events:,} events, median of {args.repeat}"
        )
        for n, fig in engine.items():
            print(
                f"engine, {n} worker(s): {fig['events_per_s'] / 1e6:6.2f} M events/s "
                f"({fig['elapsed_s']:.2f} s)"
            )
        print(
            f"single process, no IPC: {baseline['events_per_s'] / 1e6:6.2f} M events/s "
            f"({baseline['elapsed_s']:.2f} s)"
        )
        print(f"ratios: {result['ratios']}")
        for name, ok in result["targets"].items():  # type: ignore[union-attr]
            print(f"  [{'ok' if ok else 'MISS'}] {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
