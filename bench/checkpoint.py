"""What checkpoints cost, and how fast a crash is recovered.

    python -m bench.checkpoint            # a table
    python -m bench.checkpoint --json     # the same figures as JSON

1. Throughput: the quickstart pipeline (examples/quickstart.toml: generator →
   keyed 1 s tumbling windows → exactly-once files sink) with a checkpoint
   every second, and with checkpoints off (at-least-once, ``interval_ms =
   0``), interleaved in the same run, median of ``--repeat``. Target: at most
   10% slower with checkpoints.
2. Checkpoint duration per epoch (barrier sent → every report in, manifest
   written), alignment time and state size, p50/p99 over every epoch of the
   checkpointed runs (read back from their manifests).
3. Recovery: an unbounded pipeline whose workers hold ``--keys`` keys of
   window state (1 h windows: nothing closes), a checkpoint every second;
   once a checkpoint holds that state, one worker is killed with SIGKILL.
   Recovery time = from the kill to the coordinator's "processing again"
   line: detection, teardown, restart, reading the manifest and state files,
   restoring every operator, and the first rows flowing. Restart backoff is
   set to 0 for this measurement. Target: <= 2 s for 1 million keys.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import engine_runs, machine

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.toml"


def _epochs(tmp: Path) -> dict[str, Any]:
    from engine.checkpoint.store import CheckpointStore

    store = CheckpointStore(tmp / "checkpoints", keep=10_000)
    rows = [i.manifest.metrics for i in store.list() if i.manifest is not None]
    return {"epoch_metrics": rows}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def throughput(events: int, repeat: int, workers: list[int]) -> dict[str, Any]:
    on_env = {
        "RINGSTREAM_SOURCES__0__EVENTS": str(events),
        "RINGSTREAM_CHECKPOINT__INTERVAL_MS": "1000",
        "RINGSTREAM_CHECKPOINT__KEEP": "10000",
    }
    off_env = {
        "RINGSTREAM_SOURCES__0__EVENTS": str(events),
        "RINGSTREAM_CHECKPOINT__INTERVAL_MS": "0",
        "RINGSTREAM_PIPELINE__DELIVERY": "at-least-once",
    }
    on, off, epochs = [], [], []
    for _ in range(repeat):  # interleaved: drift hits both alike
        r = engine_runs.run_engine(QUICKSTART, workers, on_env, inspect=_epochs)
        on.append(r["events_per_s"])
        epochs.extend(m for m in r["epoch_metrics"] if m.get("state_bytes", 0) > 0)
        off.append(engine_runs.run_engine(QUICKSTART, workers, off_env)["events_per_s"])
        print(f"round: on {on[-1] / 1e6:.2f} M/s, off {off[-1] / 1e6:.2f} M/s", file=sys.stderr)
    on_m, off_m = statistics.median(on), statistics.median(off)
    dur = [m["duration_ms"] for m in epochs]
    align = [m.get("alignment_ms", 0.0) for m in epochs]
    size = [m.get("state_bytes", 0.0) for m in epochs]
    return {
        "events": events,
        "checkpoints_on_events_per_s": round(on_m),
        "checkpoints_off_events_per_s": round(off_m),
        "slowdown": round(1 - on_m / off_m, 4),
        "runs_on": [round(x) for x in on],
        "runs_off": [round(x) for x in off],
        "epochs_measured": len(epochs),
        "duration_ms_p50": round(_pct(dur, 0.5), 1),
        "duration_ms_p99": round(_pct(dur, 0.99), 1),
        "alignment_ms_p50": round(_pct(align, 0.5), 2),
        "alignment_ms_p99": round(_pct(align, 0.99), 2),
        "state_bytes_p50": round(_pct(size, 0.5)),
    }


RECOVERY_PIPELINE = """
[pipeline]
name = "bench-recovery"
delivery = "exactly-once"

[checkpoint]
interval_ms = 1000
dir = "{tmp}/checkpoints"
max_restarts = 3
restart_backoff_ms = 0

[[sources]]
name = "events"
type = "generator"
event_time = "ts"
events = 0
keys = {keys}
batch_rows = 65536
events_per_second = 1_000_000

[[query.steps]]
op = "window"
key = ["key"]
window = {{ type = "tumbling", size_ms = 3_600_000 }}
aggregates = ["count", "sum(value)"]

[[sinks]]
name = "out"
type = "files"
path = "{tmp}/out"
"""


def recovery(keys: int, workers: list[int], timeout_s: float = 120.0) -> dict[str, Any]:
    from engine.checkpoint.store import CheckpointStore

    cpus = machine.available_cpus()
    with tempfile.TemporaryDirectory(prefix="rs-bench-") as d:
        tmp = Path(d)
        pipeline = tmp / "recovery.toml"
        pipeline.write_text(RECOVERY_PIPELINE.format(tmp=tmp, keys=keys))
        topo = tmp / "topology.toml"
        topo.write_text(
            f"[topology]\ncoordinator = {cpus[0]}\nconnectors = [{cpus[0]}]\nworkers = {workers}\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", str(pipeline), "--topology", str(topo)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        lines: list[tuple[float, str]] = []

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append((time.monotonic(), line))

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        store = CheckpointStore(tmp / "checkpoints")
        state = 0
        try:
            while time.monotonic() < deadline:  # wait for a checkpoint holding every key
                m = store.latest_valid()
                if m is not None and m.metrics.get("state_bytes", 0) > 0:
                    state = int(m.metrics["state_bytes"])
                    if m.epoch >= 3:
                        break
                time.sleep(0.2)
            else:
                raise RuntimeError("no checkpoint with state appeared:\n" + _text(lines))
            pinned = [ln for _, ln in lines if ln.startswith("pinned: ")][-1]
            worker = int(pinned.split("worker 0 pid ")[1].split()[0])
            seen = len(lines)
            t0 = time.monotonic()
            os.kill(worker, signal.SIGKILL)
            while time.monotonic() < deadline:
                again = [t for t, ln in lines[seen:] if ln.startswith("processing again")]
                if again:
                    break
                if proc.poll() is not None:
                    raise RuntimeError("the engine exited instead of recovering:\n" + _text(lines))
                time.sleep(0.01)
            else:
                raise RuntimeError("no recovery within the timeout:\n" + _text(lines))
            recovered_s = again[0] - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"keys": keys, "state_bytes": state, "recovery_s": round(recovered_s, 3)}


def _text(lines: list[tuple[float, str]]) -> str:
    return "".join(ln for _, ln in lines[-30:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--events", type=int, default=40_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--out", help="also write the JSON object to this file")
    args = ap.parse_args(argv)
    cpus = machine.available_cpus()
    workers = [cpus[-1]]
    result: dict[str, Any] = {
        "cpus": machine.describe({"worker": workers, "coordinator+connectors": [cpus[0]]}),
        "throughput": throughput(args.events, args.repeat, workers),
        "recovery": recovery(args.keys, workers),
    }
    t, r = result["throughput"], result["recovery"]
    result["targets"] = {
        "checkpoints every 1 s cost <= 10%": t["slowdown"] <= 0.10,
        "recovery from kill -9 <= 2 s for 1M keys": r["recovery_s"] <= 2.0,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result))
        return 0
    c = result["cpus"]
    print(f"machine: {c['count']} cpus ({c['model']}); pinning {c['pinning']}")
    print(
        f"quickstart, {t['events']:,} events, median of {args.repeat}: checkpoints every 1 s "
        f"{t['checkpoints_on_events_per_s'] / 1e6:.2f} M events/s, off "
        f"{t['checkpoints_off_events_per_s'] / 1e6:.2f} M events/s -> slowdown "
        f"{t['slowdown']:.1%}"
    )
    print(
        f"checkpoint duration p50 {t['duration_ms_p50']} ms, p99 {t['duration_ms_p99']} ms; "
        f"alignment p50 {t['alignment_ms_p50']} ms, p99 {t['alignment_ms_p99']} ms; state "
        f"{t['state_bytes_p50']:,} B ({t['epochs_measured']} epochs)"
    )
    print(
        f"recovery from kill -9 of a worker holding {r['keys']:,} keys "
        f"({r['state_bytes']:,} B of state): {r['recovery_s']:.2f} s"
    )
    for name, ok in result["targets"].items():
        print(f"  [{'ok' if ok else 'MISS'}] {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
