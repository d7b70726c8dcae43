"""Producer and consumer in two spawned processes, real shared memory."""

from __future__ import annotations

import pytest

from engine.shm import Ring
from tests import peers


@pytest.mark.slow
def test_ring_two_processes_two_million_frames_checksum_equal(spawn) -> None:  # type: ignore[no-untyped-def]
    count, seed = 2_000_000, 7
    with Ring.create(1 << 16) as ring:  # small ring: thousands of wraps and full-ring waits
        result = spawn.Queue()
        consumer = spawn.start(peers.consume_frames, ring.name, result)
        expected_crc = peers.produce_frames(ring.name, count, seed, max_size=120)
        got_count, got_crc, in_order = result.get(timeout=240)
        consumer.join(30)
    assert (got_count, in_order) == (count, True)
    assert got_crc == expected_crc
    assert consumer.exitcode == 0


def test_ring_two_processes_arrow_batches_sums_equal(spawn) -> None:  # type: ignore[no-untyped-def]
    with Ring.create(1 << 18) as ring:
        result = spawn.Queue()
        consumer = spawn.start(peers.consume_batches, ring.name, result)
        producer = spawn.start(peers.produce_batches, ring.name, 3000, 11, result)
        reports = dict(r[:1] + (r[1:],) for r in (result.get(timeout=120), result.get(timeout=120)))
        producer.join(30)
        consumer.join(30)
    rows, keys, values = reports["producer"]
    assert rows > 1_000_000
    assert reports["consumer"][0] == rows
    assert reports["consumer"][1] == keys
    assert reports["consumer"][2] == pytest.approx(values, rel=1e-12)
    assert (producer.exitcode, consumer.exitcode) == (0, 0)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ring_parked_ping_pong_loses_no_wakeup(spawn) -> None:  # type: ignore[no-untyped-def]
    """20,000 round trips where every wait parks; a lost wake-up would stall 60 s and time out."""
    rounds = 10_000
    with Ring.create(1 << 12) as a, Ring.create(1 << 12) as b:
        result = spawn.Queue()
        left = spawn.start(peers.ping_pong, a.name, b.name, rounds, True, result)
        right = spawn.start(peers.ping_pong, b.name, a.name, rounds, False, result)
        values = sorted([result.get(timeout=110), result.get(timeout=110)])
        left.join(10)
        right.join(10)
    assert values == [2 * rounds - 1, 2 * rounds]
