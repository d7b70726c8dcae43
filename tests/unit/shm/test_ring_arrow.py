"""Arrow batches through one ring: round trips, zero copy, schema rules, sizes."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pytest

from engine.errors import CorruptFrameError, FrameTooLargeError, RingError, SchemaMismatchError
from engine.shm import FrameKind, Ring, RingReader, RingWriter, layout
from engine.shm.arrow_codec import BatchEncoder

CAPACITY = 1 << 16
ROWS = 20


def nullable(values: list[object], every: int = 3) -> list[object]:
    return [None if i % every == 1 else v for i, v in enumerate(values)]


COLUMNS: dict[str, pa.Array] = {
    "int64": pa.array(range(-5, ROWS - 5), pa.int64()),
    "float64": pa.array([i * 0.25 - 1e300 * (i == 3) for i in range(ROWS)], pa.float64()),
    "string": pa.array([("ab" * i)[: i % 7] + "é" * (i % 2) for i in range(ROWS)]),
    "large_string": pa.array([str(i) * i for i in range(ROWS)], pa.large_string()),
    "binary": pa.array([bytes(range(i % 5)) for i in range(ROWS)], pa.binary()),
    "bool": pa.array([i % 3 == 0 for i in range(ROWS)]),
    "list": pa.array([list(range(i % 4)) for i in range(ROWS)], pa.list_(pa.int64())),
    "struct": pa.array(
        [{"x": i, "y": f"s{i}"} for i in range(ROWS)],
        pa.struct([("x", pa.int32()), ("y", pa.string())]),
    ),
    "timestamp": pa.array(range(ROWS), pa.timestamp("us", tz="UTC")),
    "nullable_int64": pa.array(nullable(list(range(ROWS))), pa.int64()),
    "nullable_float64": pa.array(nullable([i / 7 for i in range(ROWS)]), pa.float64()),
    "nullable_string": pa.array(nullable([f"v{i}" for i in range(ROWS)])),
    "nullable_list": pa.array(nullable([[i, None] for i in range(ROWS)]), pa.list_(pa.int64())),
    "nullable_struct": pa.array(
        nullable([{"x": i, "y": None} for i in range(ROWS)]),
        pa.struct([("x", pa.int32()), ("y", pa.string())]),
    ),
    "all_null": pa.nulls(ROWS, pa.int64()),
}


def mixed_batch(rows: int = ROWS) -> pa.RecordBatch:
    return pa.record_batch({name: col[:rows] for name, col in COLUMNS.items()})


def read_all(
    reader: RingReader, check: Callable[[pa.RecordBatch], None] | None = None
) -> list[pa.RecordBatch]:
    """Every batch until EOS, copied out (a decoded batch is valid only until released)."""
    out = []
    for b in reader.batches(timeout=1):
        if check is not None:
            check(b)
        out.append(pa.concat_batches([b]) if b.num_rows else b)
    return out


def buffers_inside(batch: pa.RecordBatch, ring: Ring) -> list[bool]:
    start = ring.segment.address(0)
    end = start + layout.segment_size(ring.capacity)
    inside = []
    for col in batch.columns:
        for buf in col.buffers():
            if buf is not None and buf.size:
                inside.append(start <= buf.address and buf.address + buf.size <= end)
    return inside


# -- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_ring_batch_round_trips_column_type(
    writer: RingWriter, reader: RingReader, name: str
) -> None:
    batch = pa.record_batch({name: COLUMNS[name]})
    assert writer.write_batch(batch)
    assert writer.write_eos()
    got = read_all(reader)
    assert len(got) == 1
    assert got[0].schema.equals(batch.schema)
    assert got[0].equals(batch)


@pytest.mark.parametrize(("offset", "length"), [(0, 5), (1, 7), (3, 13), (9, 0), (ROWS - 1, 1)])
def test_ring_sliced_batch_round_trips_only_its_rows(
    writer: RingWriter, reader: RingReader, offset: int, length: int
) -> None:
    batch = mixed_batch().slice(offset, length)
    assert writer.write_batch(batch)
    assert writer.write_eos()
    got = read_all(reader)
    assert len(got) == 1 and got[0].num_rows == length
    assert got[0].equals(batch)
    assert got[0].to_pylist() == batch.to_pylist()


def test_ring_many_batches_round_trip_in_order_across_wraps(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    batches = [mixed_batch().slice(i % ROWS, (i * 7) % ROWS) for i in range(60)]
    seen = 0
    for b in batches:
        assert writer.write_batch(b, timeout=1)
        while (f := reader.poll()) is not None:
            if f.kind == FrameKind.DATA:
                assert reader.batch(f).equals(batches[seen])
                seen += 1
            reader.release(f)
    assert seen == len(batches)
    assert ring.stats()["head"] > CAPACITY  # the ring wrapped at least once


def test_ring_empty_batch_round_trips(writer: RingWriter, reader: RingReader) -> None:
    batch = mixed_batch(0)
    assert batch.num_rows == 0
    assert writer.write_batch(batch)
    assert writer.write_eos()
    got = read_all(reader)
    assert len(got) == 1
    assert got[0].num_rows == 0 and got[0].schema.equals(batch.schema)


def test_ring_batch_decodes_zero_copy_from_the_segment(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    assert writer.write_batch(mixed_batch())
    assert writer.write_eos()
    checked = []

    def check(b: pa.RecordBatch) -> None:
        inside = buffers_inside(b, ring)
        assert inside and all(inside)
        checked.append(len(inside))

    read_all(reader, check)
    assert checked and checked[0] > len(COLUMNS)


def test_ring_batch_buffers_are_eight_byte_aligned(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    assert writer.write_batch(mixed_batch().slice(3, 11))
    assert writer.write_eos()

    def check(b: pa.RecordBatch) -> None:
        for col in b.columns:
            for buf in col.buffers():
                if buf is not None and buf.size:
                    assert buf.address % 8 == 0

    read_all(reader, check)


def test_ring_batch_with_bound_too_small_is_re_measured_and_delivered(
    monkeypatch: pytest.MonkeyPatch, writer: RingWriter, reader: RingReader
) -> None:
    monkeypatch.setattr(BatchEncoder, "size_bound", staticmethod(lambda batch: 16))
    batches = [mixed_batch(), mixed_batch().slice(2, 5)]
    for b in batches:
        assert writer.write_batch(b)
    assert writer.write_eos()
    got = read_all(reader)
    assert [g.equals(b) for g, b in zip(got, batches, strict=True)] == [True, True]


# -- schema ----------------------------------------------------------------------------


def test_ring_first_batch_sends_schema_frame_that_sets_reader_schema(
    writer: RingWriter, reader: RingReader
) -> None:
    batch = mixed_batch()
    assert reader.schema is None
    assert writer.write_batch(batch)
    first = reader.poll()
    assert first is not None and first.kind == FrameKind.SCHEMA
    assert reader.schema is not None and reader.schema.equals(batch.schema)
    second = reader.poll()
    assert second is not None and second.kind == FrameKind.DATA
    assert reader.batch(second).equals(batch)
    assert reader.poll() is None  # the schema travels once, not with each batch


def test_ring_schema_is_sent_once_for_many_batches(writer: RingWriter, reader: RingReader) -> None:
    for _ in range(3):
        assert writer.write_batch(mixed_batch())
    kinds = []
    while (f := reader.poll()) is not None:
        kinds.append(f.kind)
    assert kinds == [FrameKind.SCHEMA, FrameKind.DATA, FrameKind.DATA, FrameKind.DATA]


def test_ring_explicit_schema_then_batches_round_trip(
    writer: RingWriter, reader: RingReader
) -> None:
    schema = mixed_batch().schema
    assert writer.write_schema(schema)
    assert writer.write_batch(mixed_batch())
    assert writer.write_eos()
    got = read_all(reader)
    assert reader.schema is not None and reader.schema.equals(schema)
    assert len(got) == 1 and got[0].equals(mixed_batch())


def test_ring_schema_metadata_survives(writer: RingWriter, reader: RingReader) -> None:
    schema = pa.schema([pa.field("a", pa.int64())], metadata={"source": "pg"})
    batch = pa.record_batch([pa.array([1, 2])], schema=schema)
    assert writer.write_batch(batch)
    assert writer.write_eos()
    read_all(reader)
    assert reader.schema is not None and reader.schema.metadata == {b"source": b"pg"}


def test_ring_batch_of_other_schema_raises_schema_mismatch_and_writes_nothing(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    assert writer.write_batch(pa.record_batch({"a": pa.array([1, 2], pa.int64())}))
    head = ring.stats()["head"]
    other = pa.record_batch({"a": pa.array([1.0, 2.0], pa.float64())})
    with pytest.raises(SchemaMismatchError, match=r"stream: a: int64[\s\S]*batch:  a: double"):
        writer.write_batch(other)
    with pytest.raises(SchemaMismatchError):
        writer.offer_batch(pa.record_batch({"b": pa.array([1], pa.int64())}))
    assert ring.stats()["head"] == head
    assert writer.write_batch(pa.record_batch({"a": pa.array([3], pa.int64())}))  # still usable


def test_ring_schema_mismatch_error_is_a_value_error(writer: RingWriter) -> None:
    assert writer.write_batch(pa.record_batch({"a": pa.array([1])}))
    with pytest.raises(ValueError):
        writer.write_batch(pa.record_batch({"a": pa.array(["x"])}))


@pytest.mark.parametrize(
    "column",
    [
        pa.array(["a", "b", "a"]).dictionary_encode(),
        pa.array([["a"], ["b", "a"], []], pa.list_(pa.dictionary(pa.int8(), pa.string()))),
        pa.StructArray.from_arrays([pa.array(["x", "y", "x"]).dictionary_encode()], ["d"]),
    ],
    ids=["dictionary", "list_of_dictionary", "struct_of_dictionary"],
)
def test_ring_dictionary_column_is_refused_with_schema_mismatch(
    ring: Ring, writer: RingWriter, column: pa.Array
) -> None:
    batch = pa.record_batch({"c": column})
    with pytest.raises(SchemaMismatchError, match=r"column 'c' has dictionary type"):
        writer.write_batch(batch)
    with pytest.raises(SchemaMismatchError):
        writer.write_schema(batch.schema)
    assert ring.stats()["head"] == 0  # not even the schema was sent


def test_reader_batch_of_non_data_frame_raises_ring_error(
    writer: RingWriter, reader: RingReader
) -> None:
    assert writer.write_barrier(3)
    f = reader.poll()
    assert f is not None
    with pytest.raises(RingError, match="needs a DATA frame, got BARRIER"):
        reader.batch(f)


def test_reader_data_frame_before_any_schema_raises_corrupt_frame(
    writer: RingWriter, reader: RingReader
) -> None:
    assert writer.offer(FrameKind.DATA, b"not arrow")
    f = reader.poll()
    assert f is not None
    with pytest.raises(CorruptFrameError, match="before any SCHEMA"):
        reader.batch(f)


def test_reader_batches_skip_control_frames_and_stop_at_eos(
    writer: RingWriter, reader: RingReader
) -> None:
    a, b = mixed_batch(3), mixed_batch(4)
    assert writer.write_batch(a)
    assert writer.write_watermark(-100)
    assert writer.write_barrier(1)
    assert writer.write_batch(b)
    assert writer.write_eos()
    got = read_all(reader)
    assert [g.num_rows for g in got] == [3, 4]
    assert got[0].equals(a) and got[1].equals(b)
    assert writer.ring.stats()["tail"] == writer.ring.stats()["head"]  # all released


def test_reader_batches_when_nothing_arrives_raise_timeout(reader: RingReader) -> None:
    with pytest.raises(TimeoutError, match="no frame within 0.02 s"):
        next(reader.batches(timeout=0.02))


# -- sizes and full ring ---------------------------------------------------------------


def test_ring_batch_bigger_than_ring_raises_frame_too_large(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    big = pa.record_batch({"a": pa.array(range(CAPACITY // 8 + 1), pa.int64())})
    with pytest.raises(
        FrameTooLargeError, match=rf"{big.num_rows} rows.*capacity {CAPACITY} bytes"
    ):
        writer.write_batch(big)
    with pytest.raises(FrameTooLargeError):
        writer.offer_batch(big)
    assert reader.poll() is None  # a refused batch sends nothing, not even its schema
    small = big.slice(0, 10)
    assert writer.write_batch(small)  # the writer is still usable
    schema_frame, f = reader.poll(), reader.poll()
    assert schema_frame is not None and schema_frame.kind == FrameKind.SCHEMA
    assert f is not None and reader.batch(f).equals(small)


def test_ring_offer_batch_on_full_ring_returns_false(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    batch = mixed_batch()
    assert writer.write_schema(batch.schema)
    while writer.offer(FrameKind.DATA, bytes(1000)):
        pass
    head = ring.stats()["head"]
    assert writer.offer_batch(batch) is False
    assert ring.stats()["head"] == head
    assert writer.write_batch(batch, timeout=0.02) is False

    while (f := reader.poll()) is not None:
        reader.release(f)
    assert writer.offer_batch(batch)
    f = reader.poll()
    assert f is not None and reader.batch(f).equals(batch)


def test_ring_offer_batch_without_room_for_schema_returns_false(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    while writer.offer(FrameKind.DATA, bytes(1000)):
        pass
    assert writer.offer_batch(mixed_batch()) is False
    while (f := reader.poll()) is not None:
        reader.release(f)
    assert writer.offer_batch(mixed_batch())  # the schema goes out first, then the batch
    first, second = reader.poll(), reader.poll()
    assert first is not None and second is not None
    assert (first.kind, second.kind) == (FrameKind.SCHEMA, FrameKind.DATA)
