"""CPU affinity for threads a connector's client library starts on its own.

Every engine process is pinned to one CPU (``engine.child``), and a thread inherits
the affinity of the thread that starts it. A client library with threads of its
own (librdkafka: one per broker, plus its main and timer threads, which fetch,
parse and batch the records) would then share the connector's one CPU with the
connector's Python code. ``spawning_on(cpus)`` widens the calling thread's
affinity to ``cpus`` (the topology's ``connectors``: the CPUs Ring 1 shares)
while the client is made, so its threads can run on any of them, and restores it
after. With no CPUs given, or where affinity is not supported, it does nothing.

Not guaranteed: a library that starts more threads later (after the client is
made) starts them on the caller's one CPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator


@contextlib.contextmanager
def spawning_on(cpus: Iterable[int]) -> Iterator[None]:
    wanted = set(cpus)
    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    widened = False
    if wanted and mine and wanted != mine:
        try:
            os.sched_setaffinity(0, wanted)
            widened = True
        except OSError:  # none of them may be used (the kernel drops the ones that may not)
            pass
    try:
        yield
    finally:
        if widened:
            with contextlib.suppress(OSError):  # (a CPU of ``mine`` went offline meanwhile)
                os.sched_setaffinity(0, mine)
