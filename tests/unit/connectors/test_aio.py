"""asyncio connectors under the sync contract: one private loop, kept between calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pyarrow as pa
import pytest

from connectors import aio
from connectors.base import ConnectorConfig, Source, SourceBatch
from connectors.testing import check_source


@pytest.fixture(autouse=True)
def close_the_loop() -> Iterator[None]:
    yield
    aio.shutdown()


class LoopWatcher(Source):
    """Remembers the loop ``open`` ran on; ``poll_batch`` checks it runs on the same one."""

    @aio.blocking
    async def open(self, config: ConnectorConfig) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()

    def schema(self) -> pa.Schema:
        return pa.schema([("x", pa.int64())])

    @aio.blocking
    async def poll_batch(self, max_records: int) -> SourceBatch | None:
        assert asyncio.get_running_loop() is self.loop  # the same loop as open's
        await asyncio.sleep(0)
        return None


def test_aio_blocking_methods_share_one_loop_across_calls() -> None:
    src = LoopWatcher()
    src.open(ConnectorConfig("a"))
    assert src.poll_batch(10) is None
    assert src.loop is aio.loop() and not src.loop.is_running()


def test_aio_run_returns_results_and_raises_exceptions() -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async def broken() -> None:
        raise OSError("refused")

    assert aio.run(double(21)) == 42
    with pytest.raises(OSError, match="refused"):
        aio.run(broken())


def test_aio_run_timeout_cancels_the_coroutine() -> None:
    cancelled = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with pytest.raises(TimeoutError):
        aio.run(slow(), timeout_s=0.01)
    assert cancelled == [True]


def test_aio_run_inside_a_running_loop_refused() -> None:
    async def nested() -> None:
        async def inner() -> int:
            return 1

        aio.run(inner())

    with pytest.raises(RuntimeError, match="inside a running event loop"):
        asyncio.run(nested())


def test_aio_shutdown_cancels_pending_tasks_and_a_new_loop_follows() -> None:
    async def start_background() -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(asyncio.sleep(60))

    first = aio.loop()
    task = aio.run(start_background())
    aio.shutdown()
    assert task.cancelled() and first.is_closed()
    assert aio.loop() is not first and aio.run(asyncio.sleep(0, "ok")) == "ok"


class AsyncRange(Source):
    @aio.blocking
    async def open(self, config: ConnectorConfig) -> None:
        self.config = config
        self.next = 0

    def schema(self) -> pa.Schema:
        return pa.schema([("x", pa.int64())])

    @aio.blocking
    async def poll_batch(self, max_records: int) -> SourceBatch | None:
        await asyncio.sleep(0)
        n = min(max_records, 20 - self.next)
        if n <= 0:
            return None
        self.next += n
        return SourceBatch(pa.record_batch({"x": pa.array(range(self.next - n, self.next))}))

    def finished(self) -> bool:
        return self.next >= 20


def test_aio_async_source_passes_source_conformance() -> None:
    check_source(AsyncRange, ConnectorConfig("async"), max_records=6)
