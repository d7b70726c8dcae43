"""Shared fixtures: a spawn context and a guard that no test leaks a segment."""

from __future__ import annotations

from collections.abc import Iterator

import multiprocess as mp
import pytest

from engine.shm import segment


@pytest.fixture
def spawn():  # type: ignore[no-untyped-def]
    """The ``spawn`` multiprocessing context; every process it starts is killed at teardown."""
    ctx = mp.get_context("spawn")
    procs = []

    class Ctx:
        Queue = ctx.Queue

        @staticmethod
        def start(target, *args):  # type: ignore[no-untyped-def]
            p = ctx.Process(target=target, args=args, daemon=True)
            p.start()
            procs.append(p)
            return p

    yield Ctx
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(5)


@pytest.fixture(autouse=True)
def no_leaked_segments() -> Iterator[None]:
    """Fail a test that leaves a ringstream segment of its own in /dev/shm."""
    before = set(segment.list_segments())
    yield
    leaked = set(segment.list_segments()) - before
    for name in leaked:
        segment.unlink(name)
    assert not leaked, f"test leaked shared-memory segments: {sorted(leaked)}"
