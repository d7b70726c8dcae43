"""Small frames and one-way latency: the ring against a pipe, in two pinned processes."""

from __future__ import annotations

import os
import time

from bench.harness import wait_for_go
from bench.machine import pin

WARMUP = 50  # latency messages sent first and not recorded (imports, page faults)
FRAME_BYTES = 64  # whole frame in the ring: 16-byte header + 48-byte payload
_PAYLOAD = bytes(FRAME_BYTES - 16)
_RELEASE_EVERY = 64


# -- small frames ---------------------------------------------------------------------------
def ring_frames_producer(cpu, name, go, duration):  # type: ignore[no-untyped-def]
    from engine.shm import FrameKind, Ring

    pin(cpu)
    ring = Ring.attach(name)
    w = ring.writer()
    put, data = w.put, int(FrameKind.DATA)
    start = wait_for_go(go)
    stop = start + duration
    while True:
        for _ in range(256):
            put(data, _PAYLOAD)
        if time.monotonic() >= stop:
            break
    w.write_eos()
    w.close()
    ring.close()
    return start


def ring_frames_consumer(cpu, name, ready):  # type: ignore[no-untyped-def]
    from engine.shm import FrameKind, Ring

    pin(cpu)
    ring = Ring.attach(name)
    r = ring.reader()
    ready.put(os.getpid())
    eos = int(FrameKind.EOS)
    n = held = 0
    read, release = r.read, r.release
    while True:
        f = read()
        if f.kind == eos:
            break
        n += 1
        held += 1
        if held == _RELEASE_EVERY:
            release()
            held = 0
    end = time.monotonic()
    r.release()
    r.close()
    ring.close()
    return n, n, end, 0.0


def pipe_frames_producer(cpu, path, go, duration):  # type: ignore[no-untyped-def]
    pin(cpu)
    fd = os.open(path, os.O_WRONLY)
    frame = bytes(FRAME_BYTES)
    write = os.write
    start = wait_for_go(go)
    stop = start + duration
    while True:
        for _ in range(256):
            write(fd, frame)
        if time.monotonic() >= stop:
            break
    os.close(fd)
    return start


def pipe_frames_consumer(cpu, path, ready):  # type: ignore[no-untyped-def]
    pin(cpu)
    ready.put(os.getpid())
    fd = os.open(path, os.O_RDONLY)
    total = 0
    while chunk := os.read(fd, 1 << 16):
        total += len(chunk)
    os.close(fd)
    n = total // FRAME_BYTES
    return n, n, time.monotonic(), 0.0


# -- one-way latency at a low rate ---------------------------------------------------------------
def ring_latency_producer(cpu, name, count, interval, go, duration):  # type: ignore[no-untyped-def]
    from engine.shm import FrameKind, Ring

    pin(cpu)
    ring = Ring.attach(name)
    w = ring.writer()
    start = wait_for_go(go)
    for i in range(WARMUP + count):
        time.sleep(interval)
        w.put(FrameKind.DATA, b"", value=time.monotonic_ns(), flags=int(i < WARMUP))
    w.write_eos()
    w.close()
    ring.close()
    return start


def ring_latency_consumer(cpu, name, busy, ready):  # type: ignore[no-untyped-def]
    from engine.shm import BUSY, DEFAULT, FrameKind, Ring

    pin(cpu)
    ring = Ring.attach(name)
    r = ring.reader(BUSY if busy else DEFAULT)
    ready.put(os.getpid())
    samples = []
    while True:
        f = r.read()
        now = time.monotonic_ns()
        if f.kind == FrameKind.EOS:
            break
        if not f.flags:  # flags=1 marks a warm-up message
            samples.append(now - f.value)
        r.release(f)
    r.close()
    ring.close()
    return samples


def pipe_latency_producer(cpu, path, count, interval, go, duration):  # type: ignore[no-untyped-def]
    pin(cpu)
    fd = os.open(path, os.O_WRONLY)
    start = wait_for_go(go)
    for i in range(WARMUP + count):
        time.sleep(interval)
        os.write(fd, (0 if i < WARMUP else time.monotonic_ns()).to_bytes(8, "little"))
    os.close(fd)
    return start


def pipe_latency_consumer(cpu, path, ready):  # type: ignore[no-untyped-def]
    pin(cpu)
    ready.put(os.getpid())
    fd = os.open(path, os.O_RDONLY)
    samples = []
    while msg := os.read(fd, 8):
        now = time.monotonic_ns()
        sent = int.from_bytes(msg, "little")
        if sent:  # 0 marks a warm-up message
            samples.append(now - sent)
    os.close(fd)
    return samples
