"""The generator is a pure function of (seed, index): any batching gives the same events."""

from __future__ import annotations

import pyarrow as pa
import pytest

from connectors.generator import GeneratorSource, generate
from engine.errors import ConfigError


def drain(src: GeneratorSource) -> pa.Table:
    batches = []
    while (b := src.poll_batch()) is not None:
        batches.append(b)
    return pa.Table.from_batches(batches, schema=src.schema())


def test_generator_same_events_for_any_batch_size_and_instance_split() -> None:
    whole = pa.table(generate(seed=5, start=0, stop=100_003, keys=50, events_per_second=1000))
    one = drain(
        GeneratorSource(events=100_003, keys=50, batch_rows=4096, seed=5, events_per_second=1000)
    )
    parts = [
        drain(
            GeneratorSource(
                events=100_003,
                keys=50,
                batch_rows=1000,
                seed=5,
                events_per_second=1000,
                instance=j,
                instances=3,
            )
        )
        for j in range(3)
    ]
    split = pa.concat_tables(parts).sort_by("ts")
    assert one.equals(whole)
    assert split.num_rows == whole.num_rows
    assert split.column("key").to_pylist() == whole.sort_by("ts").column("key").to_pylist()


def test_generator_values_in_range_and_event_time_in_order() -> None:
    t = pa.table(generate(seed=1, start=0, stop=50_000, keys=7, events_per_second=10_000))
    keys = t.column("key").to_numpy()
    values = t.column("value").to_numpy()
    ts = t.column("ts").to_numpy()
    assert keys.min() >= 0 and keys.max() < 7 and len(set(keys)) == 7
    assert values.min() >= 0.0 and values.max() < 1.0
    assert (ts[1:] >= ts[:-1]).all() and ts[-1] == 49_999 * 1000 // 10_000


def test_generator_different_seeds_differ() -> None:
    a = generate(seed=1, start=0, stop=1000, keys=1000, events_per_second=1000)
    b = generate(seed=2, start=0, stop=1000, keys=1000, events_per_second=1000)
    assert a.column("key") != b.column("key")


def test_generator_bounded_is_exhausted_unbounded_is_not() -> None:
    src = GeneratorSource(events=10, keys=3, batch_rows=4)
    assert [b.num_rows for b in iter(src.poll_batch, None)] == [4, 4, 2]
    endless = GeneratorSource(events=0, keys=3, batch_rows=4)
    assert all(endless.poll_batch() is not None for _ in range(100))


@pytest.mark.parametrize("field", ["keys", "batch_rows", "events_per_second", "instances"])
def test_generator_nonpositive_settings_rejected_naming_the_key(field: str) -> None:
    kwargs = {"events": 10, "keys": 3, "batch_rows": 4, field: 0}
    with pytest.raises(ConfigError, match=f"generator {field}=0"):
        GeneratorSource(**kwargs)
