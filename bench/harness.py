"""Run one producer and one consumer in two spawned, pinned processes and time them."""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from collections.abc import Callable
from typing import Any

# The standard library's multiprocessing (spawn), not the engine's ``multiprocess``:
# the mp.Queue baseline must be the real multiprocessing.Queue with the C pickler
# (``multiprocess`` pickles with dill's pure-Python pickler, 3-5x slower on small batches).
CTX = mp.get_context("spawn")


def _call(role: str, fn: Callable[..., Any], args: tuple[Any, ...], out: Any) -> None:
    try:
        out.put((role, fn(*args), None))
    except BaseException:
        out.put((role, None, traceback.format_exc()))


def wait_for_go(go: float) -> float:
    """Sleep until monotonic time ``go``; return the actual start time."""
    while time.monotonic() < go:
        time.sleep(0.0005)
    return time.monotonic()


class BenchError(RuntimeError):
    pass


def run_pair(
    producer: Callable[..., Any],
    producer_args: tuple[Any, ...],
    consumer: Callable[..., Any],
    consumer_args: tuple[Any, ...],
    start_delay: float = 0.3,
    timeout: float = 120.0,
) -> tuple[Any, Any]:
    """Start the consumer, wait until it is ready, then start the producer.

    Convention: a consumer's last parameter is a ``ready`` queue it puts its pid on
    once attached; a producer's last two parameters are ``(go, duration)``, and the
    caller passes ``duration`` as the last of ``producer_args`` (``go`` is inserted).
    Returns (producer result, consumer result); a failure in either raises BenchError
    with the child's traceback.
    """
    out, ready = CTX.Queue(), CTX.Queue()
    cons = CTX.Process(target=_call, args=("consumer", consumer, (*consumer_args, ready), out))
    cons.start()
    procs = [cons]
    try:
        ready.get(timeout=timeout)
        *head, duration = producer_args
        go = time.monotonic() + start_delay
        prod = CTX.Process(target=_call, args=("producer", producer, (*head, go, duration), out))
        prod.start()
        procs.append(prod)
        results: dict[str, Any] = {}
        for _ in range(2):
            role, value, error = out.get(timeout=timeout + duration)
            if error:
                raise BenchError(f"{role} failed:\n{error}")
            results[role] = value
        return results["producer"], results["consumer"]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
