"""Single-process ring fixtures; each test module sets its ring size in ``CAPACITY``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.shm import Ring, RingReader, RingWriter


@pytest.fixture
def ring(request: pytest.FixtureRequest) -> Iterator[Ring]:
    r = Ring.create(request.module.CAPACITY)
    yield r
    r.close()


@pytest.fixture
def writer(ring: Ring) -> Iterator[RingWriter]:
    w = ring.writer()
    yield w
    w.close()


@pytest.fixture
def reader(ring: Ring) -> Iterator[RingReader]:
    r = ring.reader()
    yield r
    r.close()
