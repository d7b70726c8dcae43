"""A batch wider than a ring can take is cut into frames that fit, never rejected.

(The one helper every writer uses: ``engine.shm.writer.split_to_fit``.)
"""

from __future__ import annotations

import pyarrow as pa

from engine.shm.arrow_codec import BatchEncoder
from engine.shm.writer import split_to_fit


def test_fitting_small_batch_stays_whole() -> None:
    batch = pa.record_batch({"x": list(range(10))})
    assert split_to_fit(batch, 1 << 20) == [batch]


def test_fitting_wide_batch_cut_into_slices_that_fit_and_keep_every_row() -> None:
    batch = pa.record_batch({"s": ["x" * 1000] * 5000})  # ~5 MB of strings
    pieces = split_to_fit(batch, 1 << 19)
    assert len(pieces) > 1
    assert all(BatchEncoder.size_bound(p) <= (1 << 19) for p in pieces)
    assert pa.Table.from_batches(pieces).equals(pa.Table.from_batches([batch]))


def test_fitting_empty_batch_gives_nothing() -> None:
    assert split_to_fit(pa.record_batch({"x": pa.array([], pa.int64())}), 1 << 20) == []
