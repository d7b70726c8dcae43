"""``InputSet`` with watermarks: the input holding the watermark back is read alone while
it keeps sending; a silent one, a tie, or an input without a watermark yet falls back to
round-robin (real rings in one process)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from engine.shm import Ring
from engine.stream import inputs as inputs_mod
from engine.stream.inputs import InputSet
from engine.stream.watermarks import NONE

CAPACITY = 1 << 16


@pytest.fixture
def two() -> Iterator[tuple[InputSet, list]]:  # type: ignore[type-arg]
    rings = [Ring.create(CAPACITY), Ring.create(CAPACITY)]
    writers = [r.writer() for r in rings]
    inputs = InputSet([r.name for r in rings])
    yield inputs, writers
    inputs.close()
    for w in writers:
        w.close()
    for r in rings:
        r.close()


def fill(writers: list, frames: int) -> None:  # type: ignore[type-arg]
    """``frames`` watermark frames on each input (value: the input's index)."""
    for i, w in enumerate(writers):
        for _ in range(frames):
            assert w.write_watermark(i)


def order(inputs: InputSet, n: int) -> list[int]:
    got = []
    for _ in range(n):
        item = inputs.next(timeout=1)
        assert item is not None
        i, frame = item
        inputs.readers[i].release(frame)
        got.append(i)
    return got


def test_the_input_with_the_lowest_watermark_is_read_alone(two) -> None:  # type: ignore[no-untyped-def]
    inputs, writers = two
    inputs.marks = [100, 500]
    fill(writers, 20)
    assert order(inputs, 20) == [0] * 20  # input 1 waits while input 0 sends
    assert order(inputs, 20) == [1] * 20  # input 0 is empty and silent: now round-robin


def test_ties_and_inputs_without_a_watermark_are_read_round_robin(two) -> None:  # type: ignore[no-untyped-def]
    inputs, writers = two
    for marks in ([7, 7], [NONE, 500]):
        inputs.marks = marks
        fill(writers, 16)
        got = order(inputs, 32)
        assert got.count(0) == got.count(1) == 16
        assert got[:16].count(1) > 0, f"{marks}: input 1 waited for input 0 to run dry"


def test_a_silent_lowest_input_stops_holding_the_others(two, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    inputs, writers = two
    monkeypatch.setattr(inputs_mod, "QUIET_S", 0.02)
    inputs.marks = [100, 500]
    assert writers[1].write_watermark(1)
    started = time.monotonic()
    item = inputs.next(timeout=1)  # input 0 has sent nothing for a while: not waited for
    assert item is not None and item[0] == 1
    assert time.monotonic() - started < 0.5
