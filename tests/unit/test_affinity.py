"""``engine.affinity.spawning_on``: a thread started inside gets the Ring 1 CPUs; the caller
keeps its own one CPU."""

from __future__ import annotations

import os
import threading

import pytest

from engine.affinity import spawning_on

CPUS = sorted(os.sched_getaffinity(0))


@pytest.mark.skipif(len(CPUS) < 2, reason="needs 2 CPUs to tell one from several")
def test_threads_started_inside_run_on_the_ring1_cpus_and_the_caller_stays_pinned() -> None:
    seen: list[set[int]] = []
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {CPUS[0]})  # as engine.child pins every process
        with spawning_on(CPUS[:2]):
            t = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
            t.start()
            t.join()
        assert seen == [set(CPUS[:2])]
        assert os.sched_getaffinity(0) == {CPUS[0]}
        with spawning_on(()):  # nothing known: nothing changes
            assert os.sched_getaffinity(0) == {CPUS[0]}
        with spawning_on([10_000]):  # a CPU this process may not use: left as it is
            assert os.sched_getaffinity(0) == {CPUS[0]}
        assert os.sched_getaffinity(0) == {CPUS[0]}
    finally:
        os.sched_setaffinity(0, before)
