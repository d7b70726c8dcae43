"""Start-up: the wall time of ``python -m engine run`` on a one-row pipeline, and its split.

    python -m bench.startup                 # 10 runs
    python -m bench.startup --runs 20 --out bench/results/startup-2cpu.json

The pipeline reads one CSV row, filters it and writes it to a JSONL file, with
checkpoints on (one epoch is written and committed, as in every run). Each run
is a fresh ``python -m engine run --log-format json`` in a fresh directory, as
a user starts it; its wall time runs from just before the process starts to
its exit. The split comes from the run's own log events (wall clock, ms):

* ``plan``: process start → ``start`` event (interpreter, imports, reading and
  checking the pipeline and topology, the plan);
* ``children``: ``start`` → ``pinned`` (rings and counters made, every child
  forked by the fork server and Ready);
* ``run``: ``pinned`` → ``summary`` (the one row read, filtered, written and
  committed; the children stopped);
* ``exit``: ``summary`` → the process gone.

Baseline in the same run, alternating with the engine's runs:
``python -c "import pyarrow"``, the least any Python process that uses Arrow
pays. Medians are printed; the JSON has every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import machine

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = """
[pipeline]
name = "startup"
[checkpoint]
dir = "{dir}/checkpoints"
[metrics]
port = 0
[[sources]]
name = "in"
type = "files"
path = "{dir}/in.csv"
format = "csv"
event_time = "ts"
[[query.steps]]
op = "filter"
where = "amount > 0"
[[sinks]]
name = "out"
type = "files"
path = "{dir}/out"
format = "jsonl"
"""
PHASES = ("plan", "children", "run", "exit")


def _at(doc: dict[str, Any]) -> float:
    return datetime.fromisoformat(doc["time"]).timestamp()


def engine_run() -> dict[str, float]:
    """One run in a fresh directory: its wall time and the split (seconds)."""
    with tempfile.TemporaryDirectory(prefix="rs-startup-") as d:
        (Path(d) / "in.csv").write_text("ts,amount\n1000,5\n")
        pipeline = Path(d) / "p.toml"
        pipeline.write_text(PIPELINE.format(dir=d))
        cmd = [sys.executable, "-m", "engine", "run", str(pipeline), "--log-format", "json"]
        began = time.time()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=d, check=False)
        ended = time.time()
        if done.returncode:
            raise RuntimeError(f"engine run failed ({done.returncode}):\n{done.stderr}")
        events = {}
        for line in (done.stderr + done.stdout).splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and "event" in doc:
                events.setdefault(doc["event"], _at(doc))
        missing = {"start", "pinned", "summary"} - events.keys()
        if missing:
            raise RuntimeError(f"the run's log lacks {sorted(missing)}:\n{done.stderr}")
        if not (Path(d) / "out").exists():
            raise RuntimeError(f"the run wrote no output:\n{done.stderr}")
    return {
        "wall": ended - began,
        "plan": events["start"] - began,
        "children": events["pinned"] - events["start"],
        "run": events["summary"] - events["pinned"],
        "exit": ended - events["summary"],
    }


def baseline_run() -> float:
    """``python -c "import pyarrow"``: wall seconds."""
    began = time.time()
    subprocess.run([sys.executable, "-c", "import pyarrow"], check=True)
    return time.time() - began


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    ap.add_argument("--runs", type=int, default=10, help="runs of each (default 10)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    env_note = "set" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "unset"
    info = machine.describe({"coordinator": None, "children": None})  # the default topology
    engine_runs, baseline = [], []
    for _ in range(args.runs):
        engine_runs.append(engine_run())
        baseline.append(baseline_run())
    median = {k: statistics.median(r[k] for r in engine_runs) for k in ("wall", *PHASES)}
    result = {
        "machine": info,
        "pinning_note": "the engine's default topology (python -m engine topology)",
        "PYTHONDONTWRITEBYTECODE": env_note,
        "runs": args.runs,
        "engine_median_s": {k: round(v, 4) for k, v in median.items()},
        "engine_min_wall_s": round(min(r["wall"] for r in engine_runs), 4),
        "engine_max_wall_s": round(max(r["wall"] for r in engine_runs), 4),
        "baseline_import_pyarrow_median_s": round(statistics.median(baseline), 4),
        "engine_runs": [{k: round(v, 4) for k, v in r.items()} for r in engine_runs],
    }
    result["ratio_to_baseline"] = round(median["wall"] / statistics.median(baseline), 2)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json:
        print(text)
        return 0
    print(f"machine: {info['count']} CPUs ({info['model']}), Python {info['python']}, "
          f"{result['pinning_note']}; PYTHONDONTWRITEBYTECODE {env_note}")  # fmt: skip
    print(f"python -m engine run, 1-row pipeline, median of {args.runs}: "
          f"{median['wall']:.3f} s wall (min {result['engine_min_wall_s']:.3f}, "
          f"max {result['engine_max_wall_s']:.3f})")  # fmt: skip
    for k in PHASES:
        print(f"  {k:9} {median[k]:.3f} s")
    print(f"baseline: python -c 'import pyarrow', median {statistics.median(baseline):.3f} s "
          f"(the engine: {result['ratio_to_baseline']}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
