"""Random writes, reads and releases against a model: every byte arrives, in order."""

from __future__ import annotations

import random
from collections import deque

from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from engine.shm import Frame, FrameKind, Ring
from engine.shm.layout import frame_size

DATA = FrameKind.DATA
MAX_CAPACITY = 1 << 14


_NOISE = random.Random(20240601).randbytes(2 * MAX_CAPACITY)


def pattern(seq: int, n: int) -> bytes:
    """``n`` bytes unique to frame ``seq``: a torn, shifted or stale frame cannot match."""
    start = (seq * 8191) % MAX_CAPACITY
    return (seq.to_bytes(4, "little") + _NOISE[start : start + n])[:n]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, list[tuple[str, int]]]:
    capacity = 1 << draw(st.integers(10, 14))
    largest = capacity - 16
    size = st.one_of(
        st.integers(0, 64),  # mostly small frames: many per lap
        st.integers(0, 512).map(lambda n: min(n, largest)),
        st.integers(0, largest),  # now and then one up to the whole ring
        st.sampled_from([largest, largest - 7, capacity // 2, capacity // 2 - 16]),
    )
    op = st.one_of(
        st.tuples(st.just("write"), size),
        st.tuples(st.just("write"), size),
        st.tuples(st.just("fill"), size),  # write until full: lands on exact boundaries
        st.tuples(st.just("write_free"), st.integers(-2, 1)),  # free space +- 8 bytes
        st.tuples(st.just("read"), st.integers(1, 8)),
        st.tuples(st.just("drain"), st.just(0)),  # read everything, release everything
        st.tuples(st.just("release_all"), st.just(0)),
        st.tuples(st.just("release_some"), st.integers(0, 7)),
    )
    return capacity, draw(st.lists(op, min_size=10, max_size=200))


def expected_fit(capacity: int, head: int, tail: int, n: int) -> bool:
    """Whether a frame of ``n`` payload bytes can be written now (padding to the end first)."""
    size = frame_size(n)
    index = head % capacity
    if index + size > capacity:
        return head + (capacity - index) + size - tail <= capacity
    return head + size - tail <= capacity


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenarios())
def test_ring_random_writes_and_reads_deliver_every_byte_in_order(
    scenario: tuple[int, list[tuple[str, int]]],
) -> None:
    capacity, ops = scenario
    ring = Ring.create(capacity)
    writer = ring.writer()
    reader = ring.reader()
    sent: deque[tuple[int, bytes]] = deque()  # published, not yet read
    held: list[tuple[Frame, bytes]] = []  # read, not released: (frame, expected payload)
    next_seq = read_seq = 0

    def check_invariants() -> None:
        s = ring.stats()
        assert 0 <= s["occupancy"] <= capacity, s
        assert s["tail"] <= s["head"]
        if held:
            assert s["tail"] <= held[0][0].position  # nothing unreleased was given back

    def read_one() -> bool:
        nonlocal read_seq
        f = reader.poll()
        if f is None:
            assert not sent, f"frame {sent[0][0]} was published but poll() returned None"
            return False
        seq, data = sent.popleft()
        assert (f.kind, f.value) == (DATA, seq)
        assert bytes(f.payload) == data, f"frame {seq} corrupted"
        assert f.end - f.position == frame_size(len(data))
        assert seq == read_seq
        read_seq += 1
        held.append((f, data))
        return True

    def release(upto: int) -> None:
        """Release the first ``upto`` held frames, checking them once more before."""
        if not held:
            reader.release()
            return
        upto = min(upto, len(held))
        for f, data in held:
            assert bytes(f.payload) == data, "an unreleased frame was overwritten"
        if upto == len(held):
            reader.release()
        elif upto:
            reader.release(held[upto - 1][0])
        del held[:upto]

    def write(n: int) -> bool:
        nonlocal next_seq
        s = ring.stats()
        fits = expected_fit(capacity, s["head"], s["tail"], n)
        data = pattern(next_seq, n)
        ok = writer.offer(DATA, data, value=next_seq)
        assert ok == fits, (s, n)
        if ok:
            sent.append((next_seq, data))
            next_seq += 1
        return ok

    try:
        for name, arg in ops:
            if name == "write":
                write(arg)
            elif name == "fill":
                for _ in range(capacity // 16 + 1):
                    if not write(arg):
                        break
            elif name == "write_free":
                free = capacity - ring.stats()["occupancy"]
                size = min(max(free + 8 * arg, 16), capacity)
                write(size - 16)
            elif name == "read":
                for _ in range(arg):
                    if not read_one():
                        break
            elif name == "drain":
                while read_one():
                    pass
                release(len(held))
            elif name == "release_all":
                release(len(held))
            else:
                release(arg)
            check_invariants()

        target(ring.stats()["head"] / capacity, label="laps of the ring")
        # Drain: everything written arrives, and then the whole ring is free again.
        while read_one():
            pass
        release(len(held))
        assert not sent and read_seq == next_seq
        s = ring.stats()
        assert s["tail"] == s["head"]
        for _ in range(2):  # a whole-ring frame fits, at most after the reader skips a pad
            data = pattern(next_seq, capacity - 16)
            if writer.offer(DATA, data, value=next_seq):
                break
            assert reader.poll() is None
        else:
            raise AssertionError("a whole-ring frame did not fit an empty ring")
        f = reader.poll()
        assert f is not None and f.value == next_seq and bytes(f.payload) == data
        del f
    finally:
        held.clear()
        writer.close()
        reader.close()
        ring.close()
