"""A waiting side parks: it costs (almost) no CPU while idle and still wakes on a publish."""

from __future__ import annotations

import time

from engine.shm import FrameKind, Ring
from tests import peers


def test_ring_idle_consumer_parks_and_uses_almost_no_cpu(spawn) -> None:  # type: ignore[no-untyped-def]
    idle = 2.0
    with Ring.create(1 << 12) as ring:
        result = spawn.Queue()
        consumer = spawn.start(peers.read_one_then_report, ring.name, result)
        while ring.stats()["consumer_pid"] != consumer.pid:
            time.sleep(0.01)
        time.sleep(idle)  # the consumer waits on an empty ring all this time
        w = ring.writer()
        assert w.put(FrameKind.DATA, b"wake up")
        cpu_seconds = result.get(timeout=30)
        w.close()
        consumer.join(10)
    # Spinning or yielding through the idle time would cost ~idle seconds of CPU.
    assert cpu_seconds < 0.1 * idle, f"idle consumer used {cpu_seconds:.3f} s of CPU"
    assert consumer.exitcode == 0
