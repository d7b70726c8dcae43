"""The msgspec path of the Kafka source's JSON decoder (``connectors.json_structs``)
against Arrow's reader, the path it replaces: the same rows and the same bad records
for any mix of objects, wrong types, unknown fields, nulls, huge numbers and broken
text — except a field given twice, which it reads as its last value."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.json_structs import NotRead, StructRows
from connectors.kafka.decode import Decoder

SCHEMA = pa.schema([("id", pa.int64()), ("x", pa.float64()), ("s", pa.string()),
                    ("b", pa.bool_()), ("odd name-1", pa.int64())])  # fmt: skip


def arrow_only(schema: pa.Schema = SCHEMA) -> Decoder:
    d = Decoder("json", schema, "sources.k")
    d.fast = None  # the fast path off: Arrow's reader decides alone
    return d


def fast(schema: pa.Schema = SCHEMA) -> Decoder:
    d = Decoder("json", schema, "sources.k")
    assert d.fast is not None
    return d


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
    st.text(max_size=6), st.just([1]), st.just({"k": 1}),
)  # fmt: skip
names = st.sampled_from(["id", "x", "s", "b", "odd name-1", "extra"])
objects = st.dictionaries(names, scalars, max_size=5)
typed = st.fixed_dictionaries({}, optional={  # objects that fit: batches the fast path reads
    "id": st.none() | st.integers(-(2**63), 2**63 - 1), "x": st.none() | st.floats(
        allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53),
    "s": st.none() | st.text(max_size=8), "b": st.none() | st.booleans(),
    "odd name-1": st.none() | st.integers(-5, 5),
})  # fmt: skip
broken = st.sampled_from([b"nope", b"", b"[1, 2]", b"7", b'{"id": 1', b'{"s": "\\ud800"}',
                          b'{"id": 1}{"id": 2}', b'{"x": 1e400}', b'\xff{"id": 1}'])  # fmt: skip
values = st.lists(
    st.one_of(objects.map(lambda o: json.dumps(o).encode()), broken, st.none()),
    min_size=1, max_size=30,
) | st.lists(typed.map(lambda o: json.dumps(o).encode()) | st.none(), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(values)
def test_same_rows_and_bad_records_as_arrows_reader(vals: list[bytes | None]) -> None:
    want_batch, want_bad = arrow_only().decode(vals)
    got_batch, got_bad = fast().decode(vals)
    assert got_bad == want_bad
    assert got_batch.schema == want_batch.schema
    assert got_batch.to_pylist() == want_batch.to_pylist()


def test_a_clean_batch_takes_the_fast_path_and_equals_arrow() -> None:
    vals = [json.dumps({"id": i, "x": i / 3, "s": f"é{i}", "b": i % 2 == 0, "odd name-1": -i})
            .encode() for i in range(2000)]  # fmt: skip
    rows = StructRows.for_schema(SCHEMA)
    assert rows is not None
    batch = rows.batch(b"\n".join(vals), len(vals))
    assert batch.equals(arrow_only().decode(vals)[0])
    with pytest.raises(NotRead):  # one object short: the caller's count decides
        rows.batch(b"\n".join(vals), len(vals) + 1)


def test_a_field_given_twice_is_its_last_value_whatever_its_neighbours() -> None:
    twice = b'{"id": 1, "id": 2}'
    assert fast().decode([twice])[0].column("id").to_pylist() == [2]
    batch, bad = fast().decode([twice, b"nope", b'{"id": 3}'])  # a bad neighbour: per record
    assert batch.column("id").to_pylist() == [2, 3] and bad == [(1, "not a JSON object")]
    assert arrow_only().decode([twice])[1] == [(0, "does not fit the schema: JSON parse error: "
                                                   "Column(/id) was specified twice in row 0")]


@pytest.mark.parametrize("schema", [
    pa.schema([("t", pa.timestamp("ms"))]), pa.schema([("i", pa.int32())]),
    pa.schema([("l", pa.list_(pa.int64()))]), pa.schema([]),
])  # fmt: skip
def test_other_types_keep_arrows_reader(schema: pa.Schema) -> None:
    assert StructRows.for_schema(schema) is None


@pytest.mark.parametrize("decoder", [fast, arrow_only])
def test_an_empty_record_and_one_of_two_objects_never_shift_the_rows(decoder) -> None:  # type: ignore[no-untyped-def]
    """Three records, three objects: the count agrees, but the empty record has none and
    the second two; each is read alone, so the rows stay beside their own offsets."""
    batch, bad = decoder().decode([b'{"id": 1}', b"", b'{"id": 2} {"id": 3}', b' ', b'{"id": 4}'])
    assert batch.column("id").to_pylist() == [1, 4]
    assert [i for i, _ in bad] == [1, 2, 3]


@pytest.mark.parametrize("decoder", [fast, arrow_only])
def test_text_that_is_not_utf8_is_a_bad_record(decoder) -> None:  # type: ignore[no-untyped-def]
    batch, bad = decoder().decode([b'{"s": "ok"}', b'{"s": "\xff\xfe"}'])
    assert batch.column("s").to_pylist() == ["ok"] and bad == [(1, "not UTF-8")]
    batch.validate(full=True)


def test_a_required_field_keeps_arrows_reader() -> None:
    assert StructRows.for_schema(pa.schema([pa.field("id", pa.int64(), nullable=False)])) is None
