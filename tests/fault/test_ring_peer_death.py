"""kill -9 either side of a ring: the survivor gets a clear error, nothing committed is lost."""

from __future__ import annotations

import os
import signal
import time

import pytest

from engine.errors import PeerDiedError
from engine.shm import FrameKind, Ring, segment
from tests import peers


def wait_for_pid(ring: Ring, key: str, pid: int) -> None:
    for _ in range(3000):
        if ring.stats()[key] == pid:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never attached as {key}")


def test_ring_consumer_killed_while_producer_blocked_raises_peer_died(spawn) -> None:  # type: ignore[no-untyped-def]
    with Ring.create(1 << 12) as ring:
        child = spawn.start(peers.attach_and_sleep, ring.name, "reader", 0)
        wait_for_pid(ring, "consumer_pid", child.pid)
        w = ring.writer()
        while w.offer(FrameKind.DATA, b"x" * 100):
            pass
        os.kill(child.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(PeerDiedError) as err:
            w.put(FrameKind.DATA, b"x" * 100)
        elapsed = time.monotonic() - started
        w.close()
    assert f"consumer (pid {child.pid}) died" in str(err.value)
    assert elapsed < 5.0  # detection is bounded by liveness_ms (100 ms); generous for CI


def test_ring_producer_killed_consumer_reads_committed_frames_then_raises(spawn) -> None:  # type: ignore[no-untyped-def]
    with Ring.create(1 << 16) as ring:
        child = spawn.start(peers.attach_and_sleep, ring.name, "writer", 500)
        wait_for_pid(ring, "producer_pid", child.pid)
        r = ring.reader()
        values = []
        while len(values) < 500:
            f = r.read(timeout=60)
            assert f is not None
            values.append(f.value)
        os.kill(child.pid, signal.SIGKILL)
        with pytest.raises(PeerDiedError) as err:
            r.read()
        r.close()
    assert values == list(range(500))
    assert f"producer (pid {child.pid}) died" in str(err.value)


def test_ring_producer_killed_with_unread_frames_consumer_loses_none(spawn) -> None:  # type: ignore[no-untyped-def]
    """Frames committed before the producer died are all delivered before the error."""
    with Ring.create(1 << 16) as ring:
        child = spawn.start(peers.attach_and_sleep, ring.name, "writer", 1000)
        wait_for_pid(ring, "producer_pid", child.pid)
        while ring.stats()["head"] < 1000 * 24:  # every frame is 24 bytes
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        result = spawn.Queue()
        survivor = spawn.start(peers.survive_as_reader, ring.name, result)
        n, error, message = result.get(timeout=60)
        survivor.join(10)
    assert (n, error) == (1000, "PeerDiedError")
    assert str(child.pid) in message


def test_ring_owner_unlinks_segment_after_child_crash(spawn) -> None:  # type: ignore[no-untyped-def]
    ring = Ring.create(1 << 12)
    child = spawn.start(peers.attach_and_sleep, ring.name, "writer", 3)
    wait_for_pid(ring, "producer_pid", child.pid)
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert ring.name in segment.list_segments()
    ring.close()
    assert ring.name not in segment.list_segments()


def test_ring_owner_killed_segment_removed_by_sweep_stale(spawn) -> None:  # type: ignore[no-untyped-def]
    result = spawn.Queue()
    child = spawn.start(peers.create_ring_and_sleep, result)
    name, pid = result.get(timeout=60)
    assert name in segment.list_segments()
    os.kill(pid, signal.SIGKILL)
    child.join(10)
    assert name in segment.sweep_stale()
    assert name not in segment.list_segments()
