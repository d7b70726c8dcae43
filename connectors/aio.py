"""Run an asyncio connector under the sync contract of ``connectors.base``.

Each connector process has one private event loop, created on first use and
never running between calls: ``run(coro)`` runs a coroutine to completion on
it and returns its result (or raises its exception). ``blocking`` turns an
``async def`` method into the plain method the contract asks for::

    class MySource(Source):
        @aio.blocking
        async def open(self, config): self.conn = await driver.connect(...)

        @aio.blocking
        async def poll_batch(self, max_records): ...

Because every call runs on the same loop, connections, futures and tasks made
in one call (``open``) stay usable in the next (``poll_batch``). Background
tasks a call starts (a driver's keep-alive) run only while some later call is
running the loop — the loop is idle between calls, as is the whole process.

``run(coro, timeout_s=...)`` cancels the coroutine after ``timeout_s`` and
raises ``TimeoutError``. ``shutdown()`` cancels what is left and closes the
loop (call it from ``close``; a later ``run`` makes a fresh loop).

Not guaranteed: calling ``run`` from inside a running event loop (it raises
``RuntimeError``); sharing the loop between threads. A loop made before a
``fork`` is not used in the child (``spawn`` is the rule anyway): a new one is.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from engine.errors import UsageError

T = TypeVar("T")
P = ParamSpec("P")

_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0


def loop() -> asyncio.AbstractEventLoop:
    """This process's private loop (made on first use)."""
    global _loop, _loop_pid
    if _loop is None or _loop.is_closed() or _loop_pid != os.getpid():
        _loop = asyncio.new_event_loop()
        _loop_pid = os.getpid()
    return _loop


def run(awaitable: Awaitable[T], timeout_s: float | None = None) -> T:
    """Run ``awaitable`` to completion on the private loop and return its result."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        if asyncio.iscoroutine(awaitable):
            awaitable.close()  # never awaited: no "coroutine was never awaited" warning
        raise UsageError("connectors.aio.run called from inside a running event loop")

    async def bounded() -> T:
        return await asyncio.wait_for(awaitable, timeout_s)

    return loop().run_until_complete(bounded())


def blocking(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Decorate an ``async def`` so that calling it runs it to completion with ``run``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return run(fn(*args, **kwargs))

    return wrapper


def shutdown() -> None:
    """Cancel the private loop's pending tasks, let them finish cancelling, close it."""
    global _loop
    lp, _loop = _loop, None
    if lp is None or lp.is_closed() or _loop_pid != os.getpid():
        return
    try:
        pending = asyncio.all_tasks(lp)
        for task in pending:
            task.cancel()
        if pending:
            lp.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        lp.run_until_complete(lp.shutdown_asyncgens())
    finally:
        lp.close()
