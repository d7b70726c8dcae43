"""The ring and its baselines, each as a producer/consumer pair run in two processes.

Every producer gets a ``go`` time and a duration, sends batches from a small
pre-built set until the duration is over, then an end marker; it returns
its start time. Every consumer touches the data (sums the ``value`` column)
and returns (rows, frames, end time, checksum). Rows/s = rows / (end - start).
The clock is CLOCK_MONOTONIC, shared by all processes of the machine.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

import numpy as np
import pyarrow as pa

from bench.harness import wait_for_go
from bench.machine import pin

PIPE_SIZE = 1 << 20  # the largest pipe buffer an unprivileged process may ask for
# Every transport gets backpressure: a bounded queue, bounded ZMQ high-water marks
# (otherwise put/send only append to an unbounded buffer and memory explodes).
QUEUE_SIZE = 8
HWM = 8


def make_batches(rows: int, count: int = 4, seed: int = 1) -> list[pa.RecordBatch]:
    rng = np.random.default_rng(seed)
    return [
        pa.record_batch(
            {
                "ts": np.arange(i * rows, (i + 1) * rows, dtype=np.int64),
                "key": rng.integers(0, 100_000, rows, dtype=np.int64),
                "value": rng.random(rows),
            }
        )
        for i in range(count)
    ]


def send_for(batches: list[pa.RecordBatch], go: float, duration: float, send) -> float:  # type: ignore[no-untyped-def]
    """From ``go`` until ``duration`` has passed, ``send`` the batches round-robin.

    Returns the actual start time. Every transport sends through this loop, so
    all pay the same per-batch overhead.
    """
    start = wait_for_go(go)
    stop = start + duration
    i = 0
    while time.monotonic() < stop:
        send(batches[i % len(batches)])
        i += 1
    return start


class Tally:
    """What every consumer does with a batch: touch the data (sum ``value``) and count it."""

    def __init__(self) -> None:
        self.rows = self.frames = 0
        self.total = 0.0

    def add(self, batch: pa.RecordBatch) -> None:
        self.total += float(np.sum(batch.column(2).to_numpy()))
        self.rows += batch.num_rows
        self.frames += 1

    def result(self) -> tuple[int, int, float, float]:
        """(rows, frames, end time, checksum), timed now: call it right after the last batch."""
        return self.rows, self.frames, time.monotonic(), self.total


# -- ring ----------------------------------------------------------------------------
def ring_producer(cpu, name, rows, go, duration):  # type: ignore[no-untyped-def]
    from engine.shm import Ring

    pin(cpu)
    batches = make_batches(rows)
    ring = Ring.attach(name)
    w = ring.writer()
    w.write_schema(batches[0].schema)
    start = send_for(batches, go, duration, w.write_batch)
    w.write_eos()
    w.close()
    ring.close()
    return start


def ring_consumer(cpu, name, ready):  # type: ignore[no-untyped-def]
    from engine.shm import Ring

    pin(cpu)
    ring = Ring.attach(name)
    r = ring.reader()
    ready.put(os.getpid())
    tally = Tally()
    for b in r.batches():
        tally.add(b)
    result = tally.result()
    r.close()
    ring.close()
    return result


# -- multiprocessing.Queue (pickled batches) -------------------------------------------------
def queue_producer(cpu, q, rows, go, duration):  # type: ignore[no-untyped-def]
    pin(cpu)
    start = send_for(make_batches(rows), go, duration, q.put)
    q.put(None)
    q.close()
    q.join_thread()
    return start


def queue_consumer(cpu, q, ready):  # type: ignore[no-untyped-def]
    pin(cpu)
    ready.put(os.getpid())
    tally = Tally()
    while (b := q.get()) is not None:
        tally.add(b)
    return tally.result()


# -- os.pipe carrying an Arrow IPC stream (a named FIFO: spawn does not inherit fds) ---------
def pipe_producer(cpu, path, rows, go, duration):  # type: ignore[no-untyped-def]
    pin(cpu)
    batches = make_batches(rows)
    # pa.OSFile seeks, which a FIFO refuses: use Python files (buffered on the read side,
    # so read(n) returns n bytes).
    with open(path, "wb", buffering=0) as sink:
        fcntl.fcntl(sink.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
        w = pa.ipc.new_stream(sink, batches[0].schema)
        start = send_for(batches, go, duration, w.write_batch)
        w.close()
    return start


def pipe_consumer(cpu, path, ready):  # type: ignore[no-untyped-def]
    pin(cpu)
    ready.put(os.getpid())
    tally = Tally()
    with open(path, "rb") as src:
        for b in pa.ipc.open_stream(src):
            tally.add(b)
        return tally.result()


# -- pyzmq PUSH/PULL over ipc://, zero-copy send of the serialised batch ----------------------
def zmq_producer(cpu, addr, rows, go, duration):  # type: ignore[no-untyped-def]
    import zmq

    pin(cpu)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.connect(addr)
    start = send_for(
        make_batches(rows), go, duration, lambda b: sock.send(b.serialize(), copy=False)
    )
    sock.send(b"")
    sock.close(linger=-1)
    ctx.term()
    return start


def zmq_consumer(cpu, addr, ready):  # type: ignore[no-untyped-def]
    import zmq

    pin(cpu)
    schema = make_batches(1, 1)[0].schema
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, HWM)
    sock.bind(addr)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    ready.put(os.getpid())
    tally, last = Tally(), time.monotonic()
    while True:
        try:
            msg = sock.recv(copy=False)
        except zmq.Again:  # 1 run in 20-60 here: the end marker never came (cause unknown)
            print("zmq_ipc baseline: nothing for 10 s, its end marker was lost; timed up to "
                  "the last batch that arrived", file=sys.stderr)  # fmt: skip
            result = (tally.rows, tally.frames, last, tally.total)
            break
        if not len(msg):
            result = tally.result()
            break
        tally.add(pa.ipc.read_record_batch(pa.py_buffer(msg.buffer), schema))
        last = time.monotonic()
    sock.close()
    ctx.term()
    return result
