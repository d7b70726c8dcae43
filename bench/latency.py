"""Latency through a running engine: push → filter → subscribe, one row per batch.

    python -m bench.latency                 # 3,000 batches at 1,000 batches/s
    python -m bench.latency --json --out bench/results/latency-2cpu.json

A pipeline with a push source (``batch_max_wait_ms = 0``: a pushed batch goes on
at once), a filter, and a subscribe sink runs with 1 worker and the default wait
strategy. A subscriber process reads the sink; this process pushes one row per
batch carrying ``CLOCK_MONOTONIC`` (system-wide on Linux) at ``--rate`` batches/s;
the subscriber records, per row, the time it arrived minus the time it was
pushed. Reported: p50, p99, max (µs), the CPU each engine process used while
the stream ran and while it then sat idle (percent of one core).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench import machine

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = """
[pipeline]
name = "latency"
[checkpoint]
interval_ms = 0
[metrics]
enabled = false
[[sources]]
name = "in"
type = "push"
dir = "{run}"
schema = {{ id = "int64", t_ns = "int64" }}
batch_max_wait_ms = 0
[[query.steps]]
op = "filter"
where = "id >= 0"
[[sinks]]
name = "out"
type = "subscribe"
dir = "{run}"
"""
SUBSCRIBER = """
import sys, time
import numpy as np
from engine import connect
from engine.errors import PeerGoneError
run, out, expect = sys.argv[1], sys.argv[2], int(sys.argv[3])
lat = []
sub = connect(run).subscribe("out", wait=30)
print("ready", flush=True)
try:
    for b in sub:
        now = time.monotonic_ns()
        lat.extend((now - np.asarray(b.column("t_ns"))).tolist())
        if len(lat) >= expect:
            break
except PeerGoneError:
    pass
np.save(out, np.array(lat, dtype=np.int64))
"""


def cpu_of(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--batches", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=1000.0, help="batches per second")
    ap.add_argument("--idle-s", type=float, default=3.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    import pyarrow as pa

    from engine import connect

    with tempfile.TemporaryDirectory(prefix="rs-lat-") as d:
        tmp = Path(d)
        run = tmp / "run"
        (tmp / "p.toml").write_text(PIPELINE.format(run=run))
        engine = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", str(tmp / "p.toml"), "--workers", "1"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        lat_file = tmp / "lat.npy"
        sub = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER, str(run), str(lat_file), str(args.batches)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert sub.stdout is not None and engine.stderr is not None
        sub.stdout.readline()  # "ready"
        names = {engine.pid: "coordinator"}
        for line in engine.stderr:  # "pinned: sink 'out' 0 pid 12 cpu 0; worker 0 pid 13 ..."
            if line.startswith("pinned: "):
                for part in line.removeprefix("pinned: ").split("; "):
                    words = part.split()
                    names[int(words[words.index("pid") + 1])] = " ".join(words[:2])
                break
        threading.Thread(target=engine.stderr.read, daemon=True).start()  # keep it drained
        pids = list(names)
        with connect(run).source("in", wait=30) as src:
            time.sleep(0.5)
            before, started = cpu_of(pids), time.monotonic()
            for i in range(args.batches):
                due = started + i / args.rate
                while (left := due - time.monotonic()) > 0:
                    time.sleep(min(left, 0.0005) if left > 0.0006 else 0)
                src.push_arrow(pa.record_batch({
                    "id": pa.array([i], pa.int64()),
                    "t_ns": pa.array([time.monotonic_ns()], pa.int64())}))  # fmt: skip
            sub.wait(60)
            busy_s = time.monotonic() - started
            after = cpu_of(pids)
            time.sleep(args.idle_s)
            idle = cpu_of(pids)
        engine.terminate()
        engine.wait(60)
        import numpy as np

        lat = np.load(lat_file) / 1000.0
    busy = {names[p]: round(100 * (after[p] - before[p]) / busy_s, 1)
            for p in after if p in before}  # fmt: skip
    quiet = {names[p]: round(100 * (idle[p] - after[p]) / args.idle_s, 1)
             for p in idle if p in after}  # fmt: skip
    result: dict[str, Any] = {
        "cpus": machine.describe({"engine": None}),
        "batches": int(lat.size),
        "rate_per_s": args.rate,
        "latency_us": {"p50": round(float(np.percentile(lat, 50)), 1),
                       "p99": round(float(np.percentile(lat, 99)), 1),
                       "max": round(float(lat.max()), 1),
                       "mean": round(float(statistics.fmean(lat.tolist())), 1)},  # fmt: skip
        "cpu_percent_streaming": busy,
        "cpu_percent_idle": quiet,
        "pid": os.getpid(),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['batches']} batches at {args.rate:.0f}/s, push -> filter -> subscribe: "
              f"latency µs {result['latency_us']}")  # fmt: skip
        print(f"CPU % while streaming {busy}; idle {quiet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
