"""The quickstart workload through the engine, with integer and string keys, and in one process.

    python -m bench.pipeline            # a table
    python -m bench.pipeline --json     # keys: engine, baseline_single_process, strings, spread

Engine: ``python -m engine run examples/quickstart.toml`` as a subprocess with
1 and 2 Ring 0 workers (topologies printed with the result); events/s as the
engine reports it (from the children being ready to the last child done).
The same runs with string keys (the generator's ``key_prefix = "user-"``:
the same keys as ``"user-000123"``, hashed by ``ring1.partition``), with the
source's CPU per event (its CPU time over the events it read, from the run's
summary) and the skew of the 2-worker runs (max/mean rows per worker).
Baseline: the same generator batches, the same window operator and the same
files sink, one after the other in a single process pinned to one core
(``engine.local``) — what the engine's process split and rings have to beat.
Each figure is the median of ``--repeat`` interleaved runs.

Spread (no engine run): how evenly ``ring1.partition`` deals real keys to 2, 4
and 16 workers — Nexmark's bids by auction and by bidder, and 1 M rows of a
Zipf(1.2) string key over 100 000 users — as max/mean rows per worker, and
max/mean distinct keys per worker (a hot key cannot be split: rows follow it).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import cli, engine_runs, machine

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.toml"
STRING_KEYS = {"RINGSTREAM_SOURCES__0__KEY_PREFIX": '"user-"'}


def topologies() -> dict[int, list[int]]:
    cpus = machine.available_cpus()
    if len(cpus) >= 3:
        return {1: [cpus[1]], 2: [cpus[1], cpus[2]]}
    return {1: [cpus[-1]], 2: [cpus[0], cpus[-1]]}  # 2 CPUs: one worker shares with Ring 1


def run_engine(
    workers: list[int], events: int, tmp: Path, extra: dict[str, str] | None = None
) -> dict[str, Any]:
    env = {"RINGSTREAM_SOURCES__0__EVENTS": str(events), **(extra or {})}
    return engine_runs.run_engine(QUICKSTART, workers, env)


def run_baseline(events: int, tmp: Path) -> dict[str, float]:
    """Generator → window operator → files sink in one pinned process (``engine.local``)."""
    return engine_runs.run_local(QUICKSTART, {"RINGSTREAM_SOURCES__0__EVENTS": str(events)})


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "events_per_s": round(statistics.median(r["events_per_s"] for r in runs)),
        "elapsed_s": round(statistics.median(r["elapsed_s"] for r in runs), 3),
        "runs_events_per_s": [round(r["events_per_s"]) for r in runs],
    }
    if runs and "cpu_s" in runs[0]:
        out["source_ns_per_event"] = round(statistics.median(
            1e9 * r["cpu_s"].get("source", 0.0) / r["events"] for r in runs), 1)  # fmt: skip
        rows = [r["worker_rows"] for r in runs if len(r["worker_rows"]) > 1]
        if rows and any(sum(w) for w in rows):  # (a direct plan: no row crosses a worker)
            out["skew_max_over_mean"] = round(statistics.median(
                max(w) / (sum(w) / len(w)) for w in rows if sum(w)), 3)  # fmt: skip
    return out


def spread() -> dict[str, dict[str, dict[str, float]]]:
    """max/mean rows (and distinct keys) per worker for real key distributions."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from connectors.base import ConnectorConfig
    from connectors.nexmark.source import NexmarkSource
    from ring1.partition import partition_ids

    bids = NexmarkSource()
    bids.open(ConnectorConfig("bids", {"kind": "bid", "events": 2_000_000, "seed": 1}))
    got = []
    while (b := bids.poll_batch(1 << 20)) is not None:
        got.append(b.batch)
    table = pa.Table.from_batches(got)
    rng = np.random.default_rng(1)
    users = pa.array([f"user-{k:06d}" for k in range(100_000)])
    zipf = users.take(pa.array(np.minimum(rng.zipf(1.2, 1_000_000), 100_000) - 1))
    columns = {
        "nexmark bids by auction": table["auction"].combine_chunks(),
        "nexmark bids by bidder": table["bidder"].combine_chunks(),
        "zipf(1.2) string users": zipf,
    }
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, col in columns.items():
        uniq = pc.unique(col)
        out[name] = {}
        for n in (2, 4, 16):
            rows = np.bincount(partition_ids([col], n), minlength=n)
            keys = np.bincount(partition_ids([uniq], n), minlength=n)
            out[name][str(n)] = {
                "rows_max_over_mean": round(float(rows.max() / rows.mean()), 3),
                "keys_max_over_mean": round(float(keys.max() / keys.mean()), 3),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    args = cli.parser("bench.pipeline", __doc__, events=20_000_000).parse_args(argv)
    topo = topologies()
    result: dict[str, Any] = {
        "cpus": machine.describe({f"{n} worker(s)": w for n, w in topo.items()}),  # type: ignore[dict-item]
        "events": args.events,
    }
    with tempfile.TemporaryDirectory(prefix="rs-bench-") as tmp:
        runs: dict[str, list[dict[str, Any]]] = {"baseline": []}
        for _ in range(args.repeat):  # interleaved, so drift hits every variant alike
            for n, workers in topo.items():
                runs.setdefault(str(n), []).append(run_engine(workers, args.events, Path(tmp)))
                runs.setdefault(f"{n} strings", []).append(
                    run_engine(workers, args.events, Path(tmp), STRING_KEYS)
                )
            runs["baseline"].append(run_baseline(args.events, Path(tmp)))
            latest = {k: round(v[-1]["events_per_s"] / 1e6, 2) for k, v in runs.items()}
            print(f"round done (M events/s): {latest}", file=sys.stderr, flush=True)
        engine = {str(n): _median(runs[str(n)]) for n in topo}
        strings = {str(n): _median(runs[f"{n} strings"]) for n in topo}
        baseline = _median(runs["baseline"])
    result["engine"] = engine
    result["strings"] = strings
    result["baseline_single_process"] = baseline
    one = engine["1"]["events_per_s"]
    result["ratios"] = {
        "1_worker_vs_baseline": round(one / baseline["events_per_s"], 2),
        "2_workers_vs_baseline": round(engine["2"]["events_per_s"] / baseline["events_per_s"], 2),
        "string_vs_int_source_cpu_per_event": round(
            strings["1"]["source_ns_per_event"] / engine["1"]["source_ns_per_event"], 2
        ),
        "string_vs_int_events_per_s_1_worker": round(strings["1"]["events_per_s"] / one, 2),
        "string_vs_int_events_per_s_2_workers": round(
            strings["2"]["events_per_s"] / engine["2"]["events_per_s"], 2
        ),
    }
    r = result["ratios"]
    result["targets"] = {
        "1 worker >= 50% of single-process baseline": one >= 0.5 * baseline["events_per_s"],
        "1 worker >= 5 M events/s": one >= 5e6,
        "string keys: source CPU per event <= 1.5x integer keys":
            r["string_vs_int_source_cpu_per_event"] <= 1.5,
        "string keys: events/s >= 70% of integer keys (1 and 2 workers)":
            min(r["string_vs_int_events_per_s_1_worker"],
                r["string_vs_int_events_per_s_2_workers"]) >= 0.7,
    }  # fmt: skip
    result["spread"] = spread()
    if cli.emit(result, args):
        return 0
    c = result["cpus"]
    print(f"machine: {c['count']} cpus ({c['model']}); pinning {c['pinning']}; "
          f"{args.events:,} events, median of {args.repeat}")  # fmt: skip
    for label, figures in (("integer keys", engine), ("string keys", strings)):
        for n, fig in figures.items():
            skew = fig.get("skew_max_over_mean")
            print(f"engine, {label}, {n} worker(s): {fig['events_per_s'] / 1e6:6.2f} M events/s "
                  f"({fig['elapsed_s']:.2f} s); source {fig['source_ns_per_event']} ns/event"
                  + (f"; skew {skew}" if skew else ""))  # fmt: skip
    print(f"single process, no IPC: {baseline['events_per_s'] / 1e6:6.2f} M events/s "
          f"({baseline['elapsed_s']:.2f} s)")  # fmt: skip
    print(f"ratios: {result['ratios']}")
    for name, ok in result["targets"].items():
        print(f"  [{'ok' if ok else 'MISS'}] {name}")
    for name, by_n in result["spread"].items():
        cells = "; ".join(f"{n} workers rows {v['rows_max_over_mean']} keys "
                          f"{v['keys_max_over_mean']}" for n, v in by_n.items())  # fmt: skip
        print(f"spread (max/mean), {name}: {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
