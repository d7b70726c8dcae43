"""Entry points of processes that tests spawn (importable by spawned children)."""

from __future__ import annotations

import os
import random
import time
import zlib

import numpy as np
import pyarrow as pa

from engine.shm import PARK, FrameKind, Ring, WaitStrategy


def frame_payload(rng: random.Random, i: int, max_size: int) -> bytes:
    n = rng.randrange(max_size + 1)
    return (i.to_bytes(8, "little") * (n // 8 + 1))[:n]


def produce_frames(name: str, count: int, seed: int, max_size: int) -> int:
    """Write ``count`` random-size frames then EOS; return the crc32 of all payloads."""
    ring = Ring.attach(name)
    w = ring.writer()
    rng = random.Random(seed)
    crc = 0
    for i in range(count):
        p = frame_payload(rng, i, max_size)
        crc = zlib.crc32(p, crc)
        w.put(FrameKind.DATA, p, value=i)
    w.write_eos()
    w.close()
    ring.close()
    return crc


def consume_frames(name: str, result) -> None:  # type: ignore[no-untyped-def]
    """Read DATA frames until EOS; report (count, crc32, in_order) on ``result``."""
    ring = Ring.attach(name)
    r = ring.reader()
    crc = count = 0
    in_order = True
    pending = 0
    while True:
        f = r.read()
        assert f is not None
        if f.kind == FrameKind.EOS:
            break
        in_order &= f.value == count
        crc = zlib.crc32(f.payload, crc)
        count += 1
        pending += 1
        if pending == 64:
            r.release()
            pending = 0
    r.release()
    result.put((count, crc, in_order))
    r.close()
    ring.close()


def make_batch(rng: np.random.Generator, rows: int, start: int) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "ts": np.arange(start, start + rows, dtype=np.int64),
            "key": rng.integers(0, 1000, rows, dtype=np.int64),
            "value": rng.random(rows),
        }
    )


def produce_batches(name: str, count: int, seed: int, result) -> None:  # type: ignore[no-untyped-def]
    """Write ``count`` random-size batches then EOS; report (rows, sum key, sum value)."""
    ring = Ring.attach(name)
    w = ring.writer()
    rng = np.random.default_rng(seed)
    rows = keys = 0
    values = 0.0
    for _ in range(count):
        b = make_batch(rng, int(rng.integers(0, 5000)), rows)
        w.write_batch(b)
        rows += b.num_rows
        keys += int(b.column(1).to_numpy().sum())
        values += float(b.column(2).to_numpy().sum())
    w.write_eos()
    result.put(("producer", rows, keys, values))
    w.close()
    ring.close()


def consume_batches(name: str, result) -> None:  # type: ignore[no-untyped-def]
    ring = Ring.attach(name)
    r = ring.reader()
    rows = keys = 0
    values = 0.0
    for b in r.batches():
        rows += b.num_rows
        keys += int(b.column(1).to_numpy().sum())
        values += float(b.column(2).to_numpy().sum())
    result.put(("consumer", rows, keys, values))
    r.close()
    ring.close()


def ping_pong(there: str, back: str, rounds: int, first: bool, result) -> None:  # type: ignore[no-untyped-def]
    """Bounce a counter ``rounds`` times with parking forced (no spin, no yield)."""
    strategy = WaitStrategy(spin_us=0, yield_us=0, park_timeout_ms=60_000, liveness_ms=60_000)
    out_ring, in_ring = Ring.attach(there), Ring.attach(back)
    w, r = out_ring.writer(strategy), in_ring.reader(strategy)
    value = 0
    if first:
        w.put(FrameKind.DATA, b"", value=0)
    for _ in range(rounds):
        f = r.read()
        assert f is not None
        value = f.value + 1
        r.release(f)
        w.put(FrameKind.DATA, b"", value=value)
    result.put(value)
    w.close()
    r.close()


def attach_and_sleep(name: str, role: str, frames: int) -> None:
    """Attach as ``role``; a writer first writes ``frames`` frames. Then sleep until killed."""
    ring = Ring.attach(name)
    side = ring.writer() if role == "writer" else ring.reader()
    if role == "writer":
        for i in range(frames):
            side.put(FrameKind.DATA, i.to_bytes(8, "little"), value=i)
    time.sleep(600)


def survive_as_reader(name: str, result) -> None:  # type: ignore[no-untyped-def]
    """Read until an error; report (frames read, error type name, message)."""
    ring = Ring.attach(name)
    r = ring.reader(PARK)
    n = 0
    try:
        while True:
            f = r.read()
            if f is not None and f.kind == FrameKind.DATA:
                n += 1
                r.release(f)
    except Exception as exc:  # reported to the test, which asserts on it
        result.put((n, type(exc).__name__, str(exc)))


def create_ring_and_sleep(result) -> None:  # type: ignore[no-untyped-def]
    ring = Ring.create(1 << 12)
    result.put((ring.name, os.getpid()))
    time.sleep(600)


def read_one_then_report(name: str, result) -> None:  # type: ignore[no-untyped-def]
    """Wait (default strategy) for one frame; report the CPU seconds this process spent."""
    ring = Ring.attach(name)
    r = ring.reader()
    before = time.process_time()
    f = r.read()
    assert f is not None
    result.put(time.process_time() - before)
    r.release(f)
    r.close()
    ring.close()
