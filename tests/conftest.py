"""Shared fixtures: a spawn context and a guard that no test leaks a segment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import multiprocess as mp
import psutil
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
    """Fail a test that leaves behind a segment owned by this process or by a dead one.

    Segments of other live processes (another test run, a benchmark) are not ours to judge.
    """
    before = set(segment.list_segments())
    yield
    leaked = []
    for name in set(segment.list_segments()) - before:
        owner = segment.owner_pid(name)
        if owner == os.getpid() or (owner is not None and not psutil.pid_exists(owner)):
            segment.unlink(name)
            leaked.append(name)
    assert not leaked, f"test leaked shared-memory segments: {sorted(leaked)}"
