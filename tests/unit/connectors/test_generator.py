"""The generator is a pure function of (seed, index): any batching gives the same events."""

from __future__ import annotations

import pyarrow as pa
import pytest

from connectors.base import ConnectorConfig, SourceCheckpoint
from connectors.generator import SCHEMA, GeneratorSource, generate
from connectors.testing import check_source
from engine.errors import CheckpointError, ConfigError


def drain(src: GeneratorSource, max_records: int = 1 << 30) -> pa.Table:
    batches = []
    while (b := src.poll_batch(max_records)) is not None:
        batches.append(b.batch)
    return pa.Table.from_batches(batches, schema=src.schema())


def test_generator_same_events_for_any_batch_size_and_instance_split() -> None:
    whole = pa.table(generate(seed=5, start=0, stop=100_003, keys=50, events_per_second=1000))
    one = drain(
        GeneratorSource.create(
            events=100_003, keys=50, batch_rows=4096, seed=5, events_per_second=1000
        )
    )
    parts = [
        drain(
            GeneratorSource.create(
                events=100_003,
                keys=50,
                batch_rows=1000,
                seed=5,
                events_per_second=1000,
                instance=j,
                instances=3,
            ),
            max_records=300,
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
    src = GeneratorSource.create(events=10, keys=3, batch_rows=4)
    sizes = []
    while (b := src.poll_batch(100)) is not None:
        sizes.append(b.batch.num_rows)
    assert sizes == [4, 4, 2] and src.finished()
    endless = GeneratorSource.create(events=0, keys=3, batch_rows=4)
    assert all(endless.poll_batch(100) is not None for _ in range(100))
    assert not endless.finished()


def test_generator_poll_smaller_than_batch_rows_cuts_the_batch() -> None:
    src = GeneratorSource.create(events=10, keys=3, batch_rows=4)
    got = [(b.batch.num_rows, b.offset) for b in iter(lambda: src.poll_batch(3), None)]
    assert got == [(3, 0), (1, 0), (3, 1), (1, 1), (2, 2)]


def test_generator_checkpoint_mid_batch_restores_the_next_row() -> None:
    src = GeneratorSource.create(events=100, keys=3, batch_rows=40)
    src.poll_batch(25)
    cp = src.checkpoint()
    assert cp.position == {"batch": 0, "row": 25}
    fresh = GeneratorSource.create(events=100, keys=3, batch_rows=40)
    fresh.restore(cp)
    rest = drain(fresh, max_records=7)
    assert rest.equals(pa.table(generate(1, 25, 100, 3, 1_000_000)))


def test_generator_restore_position_without_row_means_row_zero() -> None:
    src = GeneratorSource.create(events=100, keys=3, batch_rows=40)
    src.restore(SourceCheckpoint({"batch": 2}))
    assert drain(src).equals(pa.table(generate(1, 80, 100, 3, 1_000_000)))


def test_generator_restore_batch_of_another_instance_rejected() -> None:
    src = GeneratorSource.create(events=100, keys=3, batch_rows=10, instance=1, instances=2)
    with pytest.raises(CheckpointError, match="not a batch of instance 1"):
        src.restore(SourceCheckpoint({"batch": 4, "row": 0}))


@pytest.mark.parametrize("field", ["keys", "batch_rows", "events_per_second"])
def test_generator_nonpositive_settings_rejected_naming_the_key(field: str) -> None:
    kwargs = {"events": 10, "keys": 3, "batch_rows": 4, field: 0}
    with pytest.raises(ConfigError, match=f"sources.generator.{field}=0 must be an integer >= 1"):
        GeneratorSource.create(**kwargs)


def test_generator_unknown_option_rejected_naming_it() -> None:
    with pytest.raises(ConfigError, match="unknown option 'event'"):
        GeneratorSource.create(event=10)


def test_generator_instance_out_of_range_rejected() -> None:
    with pytest.raises(ConfigError, match="instance=3"):
        GeneratorSource.create(instance=3, instances=3)


def test_generator_defaults_match_the_documented_ones() -> None:
    src = GeneratorSource.create()
    assert (src.events, src.keys, src.batch_rows, src.seed) == (20_000_000, 10_000, 65_536, 1)
    assert src.schema() == SCHEMA and src.supports_replay()


@pytest.mark.parametrize(("instance", "instances"), [(0, 1), (2, 3)])
def test_generator_passes_source_conformance(instance: int, instances: int) -> None:
    config = ConnectorConfig(
        "gen", {"events": 5_003, "keys": 9, "batch_rows": 700}, instance, instances
    )
    check_source(GeneratorSource, config, max_records=300)


def test_generator_unbounded_passes_source_conformance() -> None:
    config = ConnectorConfig("gen", {"events": 0, "keys": 9, "batch_rows": 700})
    check_source(GeneratorSource, config, max_records=500, max_rows=6_000)


def test_max_rate_paces_the_stream_in_wall_clock_time_and_keeps_its_events() -> None:
    """``max_rate``: the same events, no faster than the rate (a lower bound on time, never
    an upper one); a poll ahead of the rate returns nothing and ``data_ready`` waits."""
    import time

    paced = GeneratorSource.create(events=30_000, batch_rows=5_000, max_rate=100_000)
    plain = GeneratorSource.create(events=30_000, batch_rows=5_000)
    started, got = time.monotonic(), []
    while not paced.finished():
        b = paced.poll_batch(65_536)
        if b is None:
            paced.data_ready(0.05)
            continue
        got.append(b.batch)
    took = time.monotonic() - started
    assert took >= 0.25  # the 6th batch of 5,000 may go at 0.25 s
    assert pa.Table.from_batches(got).equals(
        pa.Table.from_batches([plain.poll_batch(65_536).batch for _ in range(6)])  # type: ignore[union-attr]
    )
    two = GeneratorSource.create(events=30_000, batch_rows=5_000, max_rate=1_000, instances=2)
    assert two.max_rate == 500  # the source's rate, shared out between its instances
    assert two.poll_batch(65_536) is not None and two.poll_batch(65_536) is None  # ahead: waits
