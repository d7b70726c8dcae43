"""Ring throughput, small frames and latency, with baselines measured in the same run.

    python -m bench.ring            # a table
    python -m bench.ring --json     # one JSON object (keys: ring, baselines, memcpy_gbps,
                                    #  small_frames, latency_us, cpus, ratios, targets)

Producer and consumer run in two spawned processes pinned to the first two
available cores; the consumer sums the ``value`` column of every batch.
Batches have three columns (int64 ts, int64 key, float64 value): 24 bytes a row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from bench import frames, machine, transports
from bench.harness import CTX, run_pair
from engine.shm import Ring

ROW_BYTES = 24
SIZES = {"1K": 1 << 10, "64K": 1 << 16, "1M": 1 << 20}
BASELINES = ("mp_queue", "pipe_ipc", "zmq_ipc")


def ring_capacity(rows: int) -> int:
    """~4 frames, at least 1 MiB: small enough to stay in cache, big enough to overlap."""
    frame = rows * ROW_BYTES + 4096
    cap = 1 << 20
    while cap < 4 * frame:
        cap <<= 1
    return cap


def _rates(rows_total: int, frames_total: int, seconds: float) -> dict[str, float]:
    return {
        "batches_per_s": round(frames_total / seconds, 1),
        "rows_per_s": round(rows_total / seconds),
        "gbps": round(rows_total * ROW_BYTES / seconds / 1e9, 3),
    }


def measure_memcpy(nbytes: int = 24 << 20, repeat: int = 7) -> float:
    """Single-core memcpy GB/s (numpy copyto between pre-touched buffers, best of N).

    Run in a child pinned like the producer; the default size is one 1M-row batch.
    """
    src = np.ones(nbytes // 8, dtype=np.int64)
    dst = np.zeros_like(src)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return round(nbytes / best / 1e9, 2)


def measure_batches(transport: str, rows: int, duration: float, pins: dict) -> dict:
    p, c = pins["producer"], pins["consumer"]
    with tempfile.TemporaryDirectory(prefix="rs-bench-") as tmp:
        if transport == "ring":
            cap = ring_capacity(rows)
            with Ring.create(cap) as ring:
                start, (n, f, end, _) = run_pair(
                    transports.ring_producer,
                    (p, ring.name, rows, duration),
                    transports.ring_consumer,
                    (c, ring.name),
                )
            return {**_rates(n, f, end - start), "ring_capacity": cap}
        if transport == "mp_queue":
            q = CTX.Queue(maxsize=transports.QUEUE_SIZE)
            start, (n, f, end, _) = run_pair(
                transports.queue_producer,
                (p, q, rows, duration),
                transports.queue_consumer,
                (c, q),
            )
        elif transport == "pipe_ipc":
            path = os.path.join(tmp, "fifo")
            os.mkfifo(path, 0o600)
            start, (n, f, end, _) = run_pair(
                transports.pipe_producer,
                (p, path, rows, duration),
                transports.pipe_consumer,
                (c, path),
            )
        elif transport == "zmq_ipc":
            addr = "ipc://" + os.path.join(tmp, "zmq.sock")
            start, (n, f, end, _) = run_pair(
                transports.zmq_producer,
                (p, addr, rows, duration),
                transports.zmq_consumer,
                (c, addr),
            )
        else:
            raise ValueError(f"unknown transport {transport!r}")
    return _rates(n, f, end - start)


def measure_small_frames(duration: float, pins: dict) -> dict:
    p, c = pins["producer"], pins["consumer"]
    with Ring.create(1 << 20) as ring:
        start, (n, _, end, _) = run_pair(
            frames.ring_frames_producer,
            (p, ring.name, duration),
            frames.ring_frames_consumer,
            (c, ring.name),
        )
    ring_rate = n / (end - start)
    with tempfile.TemporaryDirectory(prefix="rs-bench-") as tmp:
        path = os.path.join(tmp, "fifo")
        os.mkfifo(path, 0o600)
        start, (n, _, end, _) = run_pair(
            frames.pipe_frames_producer,
            (p, path, duration),
            frames.pipe_frames_consumer,
            (c, path),
        )
    return {
        "frame_bytes": frames.FRAME_BYTES,
        "ring_frames_per_s": round(ring_rate),
        "pipe_frames_per_s": round(n / (end - start)),
    }


def _percentiles(samples: list[int]) -> dict[str, float]:
    a = np.sort(np.asarray(samples, dtype=np.float64)) / 1e3
    return {
        "p50": round(float(np.percentile(a, 50)), 1),
        "p99": round(float(np.percentile(a, 99)), 1),
        "max": round(float(a[-1]), 1),
    }


def measure_latency(count: int, rate: int, pins: dict) -> dict:
    p, c = pins["producer"], pins["consumer"]
    interval = 1.0 / rate
    out: dict[str, object] = {"rate_per_s": rate, "messages": count}
    for label, busy in (("ring_park", False), ("ring_spin", True)):
        with Ring.create(1 << 16) as ring:
            _, samples = run_pair(
                frames.ring_latency_producer,
                (p, ring.name, count, interval, 0.0),
                frames.ring_latency_consumer,
                (c, ring.name, busy),
            )
        out[label] = _percentiles(samples)
    with tempfile.TemporaryDirectory(prefix="rs-bench-") as tmp:
        path = os.path.join(tmp, "fifo")
        os.mkfifo(path, 0o600)
        _, samples = run_pair(
            frames.pipe_latency_producer,
            (p, path, count, interval, 0.0),
            frames.pipe_latency_consumer,
            (c, path),
        )
    out["pipe"] = _percentiles(samples)
    return out


def run(duration: float, sizes: list[str], latency_count: int, progress) -> dict:  # type: ignore[no-untyped-def]
    pins = machine.pair_pinning()
    result: dict[str, object] = {"cpus": machine.describe(pins)}
    progress(f"cpus: {result['cpus']}")
    with CTX.Pool(1, machine.pin, (pins["producer"],)) as pool:
        result["memcpy_gbps"] = pool.apply(measure_memcpy)
    progress(f"memcpy: {result['memcpy_gbps']} GB/s")
    ring: dict[str, dict] = {}
    baselines: dict[str, dict] = {b: {} for b in BASELINES}
    for label in sizes:
        rows = SIZES[label]
        ring[label] = {"rows_per_batch": rows, **measure_batches("ring", rows, duration, pins)}
        progress(f"ring {label}: {ring[label]}")
        for b in BASELINES:
            baselines[b][label] = measure_batches(b, rows, duration, pins)
            progress(f"{b} {label}: {baselines[b][label]}")
    result["ring"] = ring
    result["baselines"] = baselines
    result["small_frames"] = measure_small_frames(duration, pins)
    progress(f"small frames: {result['small_frames']}")
    result["latency_us"] = measure_latency(latency_count, 1000, pins)
    progress(f"latency: {result['latency_us']}")
    result["ratios"], result["targets"] = judge(result)
    return result


def judge(r: dict) -> tuple[dict, dict]:
    """The issue's targets, as ratios against figures measured in this same run."""
    ratios: dict[str, float] = {}
    targets: dict[str, bool] = {}
    ring, base = r["ring"], r["baselines"]
    if "64K" in ring:
        ours = ring["64K"]["rows_per_s"]
        q = base["mp_queue"]["64K"]["rows_per_s"]
        best_other = max(base[b]["64K"]["rows_per_s"] for b in BASELINES if b != "mp_queue")
        ratios["64K_vs_mp_queue"] = round(ours / q, 2)
        ratios["64K_vs_best_other_baseline"] = round(ours / best_other, 2)
        targets["64K >= 5x mp_queue"] = ratios["64K_vs_mp_queue"] >= 5
        targets["64K >= 2x best other baseline"] = ratios["64K_vs_best_other_baseline"] >= 2
    if "1M" in ring:
        ratios["1M_vs_memcpy"] = round(ring["1M"]["gbps"] / r["memcpy_gbps"], 3)
        targets["1M >= 30% of memcpy"] = ratios["1M_vs_memcpy"] >= 0.30
    targets["small frames >= 500,000/s"] = r["small_frames"]["ring_frames_per_s"] >= 500_000
    lat = r["latency_us"]
    targets["p99 latency <= 100 us (spinning)"] = lat["ring_spin"]["p99"] <= 100
    targets["p99 latency <= 100 us (parked)"] = lat["ring_park"]["p99"] <= 100
    return ratios, targets


def print_table(r: dict) -> None:
    cpus = r["cpus"]
    print(
        f"machine: {cpus['count']} cpus ({cpus['model']}), available {cpus['available']}, "
        f"pinning {cpus['pinning']}"
    )
    print(f"single-core memcpy: {r['memcpy_gbps']} GB/s\n")
    print(f"{'transport':<12}{'batch':>6}{'batches/s':>13}{'M rows/s':>11}{'GB/s':>8}")
    for label, fig in r["ring"].items():
        rows = [("ring", fig)] + [(b, r["baselines"][b][label]) for b in BASELINES]
        for name, f in rows:
            print(
                f"{name:<12}{label:>6}{f['batches_per_s']:>13,.0f}"
                f"{f['rows_per_s'] / 1e6:>11.1f}{f['gbps']:>8.2f}"
            )
    sf = r["small_frames"]
    print(
        f"\n{sf['frame_bytes']}-byte frames/s: ring {sf['ring_frames_per_s']:,}  "
        f"pipe {sf['pipe_frames_per_s']:,}"
    )
    lat = r["latency_us"]
    print(
        f"one-way latency at {lat['rate_per_s']}/s (µs): "
        + "  ".join(
            f"{k} p50 {v['p50']} p99 {v['p99']}" for k, v in lat.items() if isinstance(v, dict)
        )
    )
    print(f"\nratios: {r['ratios']}")
    for name, ok in r["targets"].items():
        print(f"  [{'ok' if ok else 'MISS'}] {name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.ring",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--duration", type=float, default=1.5, help="seconds per measurement")
    ap.add_argument("--sizes", default="1K,64K,1M", help="batch sizes, from 1K,64K,1M")
    ap.add_argument("--latency-messages", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="short run (smoke test)")
    ap.add_argument("--out", help="also write the JSON object to this file")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.latency_messages = 0.2, 100
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        ap.error(f"unknown batch sizes {unknown}; choose from {list(SIZES)}")

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    result = run(args.duration, sizes, args.latency_messages, progress)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
