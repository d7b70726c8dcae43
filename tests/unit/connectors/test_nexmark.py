"""The Nexmark source: a pure function of (seed, index), the model's shape, and the references."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from connectors.base import ConnectorConfig, SourceCheckpoint
from connectors.nexmark import SCHEMAS, NexmarkSource, generate_events
from connectors.nexmark.model import DEFAULT_START_MS, count_before, indices
from engine.errors import ConfigError, StateError
from tests.nexmark_reference import QUERIES, canonical, generate_tables, reference

KINDS = ("person", "auction", "bid")


def open_source(instance: int = 0, instances: int = 1, **options: Any) -> NexmarkSource:
    source = NexmarkSource()
    source.open(ConnectorConfig("nx", options=options, instance=instance, instances=instances))
    return source


def drain(source: NexmarkSource, max_records: int = 1 << 30) -> list[pa.RecordBatch]:
    batches = []
    while not source.finished():
        polled = source.poll_batch(max_records)
        if polled is not None:
            batches.append(polled.batch)
    return batches


def table(batches: list[pa.RecordBatch], kind: str) -> pa.Table:
    return pa.Table.from_batches(batches, schema=SCHEMAS[kind])


@pytest.fixture(scope="module")
def tables() -> dict[str, pa.Table]:
    """100 K model events spread over 100 s of event time (ten 10 s windows)."""
    return generate_tables(100_000, seed=3, events_per_second=1000, batch_rows=8192)


@pytest.mark.parametrize("kind", KINDS)
def test_nexmark_any_chunking_or_instance_split_gives_same_rows(kind: str) -> None:
    events = 20_011
    whole = pa.table(generate_events(kind, 7, 0, events, 1000))
    one = table(drain(open_source(kind=kind, events=events, seed=7, events_per_second=1000)), kind)
    assert one.equals(whole)
    per_instance = [
        drain(
            open_source(
                j, 3, kind=kind, events=events, seed=7, events_per_second=1000, batch_rows=1001
            )
        )
        for j in range(3)
    ]
    # every chunk of 1001 events holds rows of each kind, so chunk c is instance c % 3's poll c // 3
    chunks = [per_instance[c % 3][c // 3] for c in range(sum(map(len, per_instance)))]
    assert table(chunks, kind).equals(whole)


@pytest.mark.parametrize("kind", KINDS)
def test_nexmark_generate_events_split_mid_group_same_rows(kind: str) -> None:
    whole = pa.table(generate_events(kind, 2, 0, 5_000, 10_000, ooo_ms=30))
    cuts = [0, 1, 3, 4, 49, 50, 51, 1234, 4999, 5000]
    parts = [generate_events(kind, 2, a, b, 10_000, ooo_ms=30) for a, b in itertools.pairwise(cuts)]
    assert table(parts, kind).equals(whole)


@pytest.mark.parametrize("max_records", [1 << 30, 777])
def test_nexmark_restore_from_checkpoint_replays_the_rows_after_it(max_records: int) -> None:
    options = {"kind": "bid", "events": 30_000, "seed": 4, "batch_rows": 2048}
    first = open_source(1, 2, **options)
    for _ in range(2):
        assert first.poll_batch(max_records) is not None
    checkpoint = first.checkpoint()
    # 2048 events hold ~1884 bids: 777-row polls leave the chunk part-way through
    assert ("row" in checkpoint.position) == (max_records == 777)
    rest = table(drain(first, max_records), "bid")
    second = open_source(1, 2, **options)
    second.restore(SourceCheckpoint(dict(checkpoint.position)))
    assert table(drain(second, max_records), "bid").equals(rest)
    assert rest.num_rows > 0


def test_nexmark_max_records_splits_a_chunk_without_losing_rows() -> None:
    options = {"kind": "bid", "events": 10_000, "batch_rows": 4096}
    batches = drain(open_source(**options), max_records=1000)
    assert max(b.num_rows for b in batches) == 1000
    whole = pa.table(generate_events("bid", 1, 0, 10_000, 1_000_000))
    assert table(batches, "bid").equals(whole)


def test_nexmark_checkpoint_is_next_chunk_and_offset_is_last_index() -> None:
    source = open_source(2, 3, kind="auction", events=100_000, batch_rows=1000)
    assert source.checkpoint().position == {"chunk": 2}
    polled = source.poll_batch(1 << 30)
    assert polled is not None
    assert source.checkpoint().position == {"chunk": 5}
    assert polled.offset == int(indices("auction", 2000, 3000)[-1])


def test_nexmark_checkpoint_of_another_instance_raises_state_error() -> None:
    source = open_source(0, 2, kind="bid")
    with pytest.raises(StateError, match="chunk=3"):
        source.restore(SourceCheckpoint({"chunk": 3}))


def test_nexmark_proportions_are_1_3_46_per_50_events() -> None:
    rows = {kind: generate_events(kind, 1, 0, 50_000, 1000).num_rows for kind in KINDS}
    assert rows == {"person": 1000, "auction": 3000, "bid": 46_000}
    for stop in (1, 2, 4, 5, 123, 50_049):
        assert sum(generate_events(k, 1, 0, stop, 1000).num_rows for k in KINDS) == stop
        assert generate_events("bid", 1, 0, stop, 1000).num_rows == count_before("bid", stop)


def test_nexmark_ids_count_up_from_1000_and_times_follow_the_index(
    tables: dict[str, pa.Table],
) -> None:
    persons, auctions = tables["person"], tables["auction"]
    assert persons["id"].to_pylist() == list(range(1000, 1000 + persons.num_rows))
    assert auctions["id"].to_pylist() == list(range(1000, 1000 + auctions.num_rows))
    for kind in KINDS:
        i = indices(kind, 0, 100_000)
        ms = tables[kind]["date_time"].cast(pa.int64()).to_numpy()
        assert (ms == DEFAULT_START_MS + i * 1000 // 1000).all()


def test_nexmark_references_name_events_earlier_in_the_sequence(
    tables: dict[str, pa.Table],
) -> None:
    bid_index = indices("bid", 0, 100_000)
    auction_index = indices("auction", 0, 100_000)
    auctions_before = np.array([count_before("auction", int(i)) for i in bid_index[::97]])
    persons_before = np.array([count_before("person", int(i)) for i in bid_index[::97]])
    bids = tables["bid"]
    assert (bids["auction"].to_numpy()[::97] - 1000 < auctions_before).all()
    assert (bids["bidder"].to_numpy()[::97] - 1000 < persons_before).all()
    sellers_before = np.array([count_before("person", int(i)) for i in auction_index])
    assert (tables["auction"]["seller"].to_numpy() - 1000 < sellers_before).all()
    assert pc.all(pc.is_in(bids["auction"], tables["auction"]["id"])).as_py()
    assert pc.all(pc.is_in(bids["bidder"], tables["person"]["id"])).as_py()
    assert pc.all(pc.is_in(tables["auction"]["seller"], tables["person"]["id"])).as_py()


def test_nexmark_hot_auctions_sellers_and_bidders_dominate(tables: dict[str, pa.Table]) -> None:
    bids, auctions = tables["bid"], tables["auction"]
    on_hot = pc.mean(pc.equal(pc.subtract(bids["auction"], 1000).to_numpy() % 100, 0).cast("int8"))
    assert 0.45 < on_hot.as_py() < 0.6  # 1/2 hot, plus the cold picks that land on one
    hot_sellers = ((auctions["seller"].to_numpy() - 1000) % 100 == 0).mean()
    assert 0.7 < hot_sellers < 0.8
    hot_bidders = ((bids["bidder"].to_numpy() - 1000) % 100 == 1).mean()
    assert 0.7 < hot_bidders < 0.8
    categories = set(auctions["category"].to_pylist())
    assert categories == {10, 11, 12, 13, 14}


def test_nexmark_prices_are_skewed_cents_between_1_and_1m_dollars(
    tables: dict[str, pa.Table],
) -> None:
    price = tables["bid"]["price"].to_numpy()
    assert price.min() >= 100 and price.max() <= 100_000_000
    assert np.median(price) < price.mean() / 10  # log-uniform: the mean is far above the median
    auctions = tables["auction"]
    assert pc.all(pc.greater_equal(auctions["reserve"], auctions["initial_bid"])).as_py()
    assert pc.all(pc.greater(auctions["expires"], auctions["date_time"])).as_py()


@pytest.mark.parametrize("kind", KINDS)
def test_nexmark_batches_have_the_kind_schema_with_plain_strings(kind: str) -> None:
    source = open_source(kind=kind, events=5_000, batch_rows=1000)
    assert source.schema() == SCHEMAS[kind]
    for batch in drain(source):
        assert batch.schema == SCHEMAS[kind]
        assert not any(pa.types.is_dictionary(f.type) for f in batch.schema)
        assert all(batch.column(k).null_count == 0 for k in range(batch.num_columns))
    assert pa.types.is_timestamp(SCHEMAS[kind].field("date_time").type)


def test_nexmark_string_columns_draw_from_the_model_vocabularies(
    tables: dict[str, pa.Table],
) -> None:
    persons, bids = tables["person"], tables["bid"]
    assert set(persons["state"].to_pylist()) == {"AZ", "CA", "ID", "OR", "WA", "WY"}
    first_names = {name.split(" ")[0] for name in persons["name"].to_pylist()}
    assert {"Peter", "Walter"} <= first_names
    assert pc.all(pc.match_substring_regex(persons["credit_card"], r"^(\d{4} ){3}\d{4}$")).as_py()
    assert pc.all(pc.match_substring_regex(persons["email_address"], r"^\w+@\w+\.com$")).as_py()
    hot = pc.is_in(bids["channel"], pa.array(["Google", "Facebook", "Baidu", "Apple"]))
    assert 0.85 < pc.mean(hot.cast("int8")).as_py() < 0.95
    assert pc.all(pc.starts_with(bids["url"], "https://www.nexmark.com/")).as_py()
    lengths = pc.utf8_length(bids["extra"]).to_numpy()
    assert lengths.min() >= 54 and lengths.max() <= 81


def test_nexmark_out_of_orderness_is_bounded_and_deterministic() -> None:
    late = generate_events("bid", 1, 0, 50_000, 100_000, ooo_ms=200)
    again = generate_events("bid", 1, 0, 50_000, 100_000, ooo_ms=200)
    assert late.equals(again)
    ms = late.column("date_time").cast(pa.int64()).to_numpy()
    base = DEFAULT_START_MS + indices("bid", 0, 50_000) * 1000 // 100_000
    jitter = ms - base
    assert jitter.min() >= 0 and jitter.max() <= 200 and len(np.unique(jitter)) > 150
    assert (np.maximum.accumulate(ms) - ms).max() <= 200
    assert (np.diff(ms) < 0).any()


def test_nexmark_different_seeds_give_different_rows() -> None:
    a = generate_events("bid", 1, 0, 1000, 1000)
    b = generate_events("bid", 2, 0, 1000, 1000)
    assert a.column("price") != b.column("price")
    assert a.column("date_time") == b.column("date_time")


def test_nexmark_bounded_finishes_and_unbounded_keeps_going() -> None:
    bounded = open_source(kind="person", events=120, batch_rows=50)
    assert len(drain(bounded)) == 3 and bounded.finished()
    assert bounded.poll_batch(100) is None
    unbounded = open_source(kind="person", events=0, batch_rows=50)
    for _ in range(100):
        assert unbounded.poll_batch(100) is not None
    assert not unbounded.finished()


def test_nexmark_chunks_without_rows_of_the_kind_are_skipped() -> None:
    # instance 1 of 2, chunks of 25 events: its chunks 1, 3, 5, ... never hold a person
    source = open_source(1, 2, kind="person", events=0, batch_rows=25)
    assert source.poll_batch(100) is None
    assert not source.finished()
    bounded = open_source(1, 2, kind="person", events=1000, batch_rows=25)
    assert drain(bounded) == [] and bounded.finished()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kind": "bid", "rate": 5}, "rate"),
        ({"kind": "ask"}, "kind='ask'"),
        ({}, "kind=None"),
        ({"kind": "bid", "events": -1}, "events=-1"),
        ({"kind": "bid", "batch_rows": 0}, "batch_rows=0"),
        ({"kind": "bid", "events_per_second": 0}, "events_per_second=0"),
        ({"kind": "bid", "seed": "x"}, "seed='x'"),
        ({"kind": "bid", "events": True}, "events=True"),
        ({"kind": "bid", "max_out_of_orderness_ms": -5}, "max_out_of_orderness_ms=-5"),
    ],
)
def test_nexmark_bad_option_raises_config_error_naming_it(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        open_source(**options)


def test_nexmark_generate_tables_matches_generate_events(tables: dict[str, pa.Table]) -> None:
    for kind in KINDS:
        direct = pa.table(generate_events(kind, 3, 0, 100_000, 1000))
        assert tables[kind].combine_chunks().equals(direct.combine_chunks())


@pytest.mark.parametrize("query", sorted(QUERIES))
def test_nexmark_reference_query_returns_canonical_rows(
    query: str, tables: dict[str, pa.Table]
) -> None:
    result = reference(query, tables)
    assert result.num_rows > 0
    shuffled = result.take(np.random.default_rng(0).permutation(result.num_rows))
    assert canonical(query, shuffled).equals(result)


def test_nexmark_reference_simple_queries_match_arrow(tables: dict[str, pa.Table]) -> None:
    bids = tables["bid"]
    assert reference("q0", tables).num_rows == bids.num_rows
    q1 = reference("q1", tables)
    assert q1["price_eur"].type == pa.float64()
    assert np.allclose(
        q1["price_eur"].to_numpy(), canonical("q0", bids)["price"].to_numpy() * 0.908
    )
    mask = pa.array(bids["auction"].to_numpy() % 123 == 0)
    expected = canonical("q2", bids.filter(mask))
    assert expected.num_rows > 0
    assert reference("q2", tables).equals(expected)


def test_nexmark_reference_windows_match_a_direct_computation(
    tables: dict[str, pa.Table],
) -> None:
    bids = tables["bid"]
    ms = bids["date_time"].cast(pa.int64()).to_numpy()
    price, auction = bids["price"].to_numpy(), bids["auction"].to_numpy()
    q7 = reference("q7", tables)
    assert q7.num_rows == 10  # 100 s of event time, aligned to 10 s
    for row in q7.to_pylist():
        start = int(row["window_start"].timestamp() * 1000)
        inside = (ms >= start) & (ms < start + 10_000)
        top = price[inside].max()
        assert row["price"] == top
        assert row["auction"] == auction[inside & (price == top)].min()
    q5 = reference("q5", tables)
    assert q5.num_rows == 54  # 50 windows of data + 4 partial ones before the first
    for row in q5.to_pylist()[::7]:
        start = int(row["window_start"].timestamp() * 1000)
        ids, counts = np.unique(auction[(ms >= start) & (ms < start + 10_000)], return_counts=True)
        assert row["max_count"] == counts.max()
        assert row["auction"] == ids[counts == counts.max()].min()


def test_nexmark_reference_q8_pairs_people_with_their_auctions_in_one_window(
    tables: dict[str, pa.Table],
) -> None:
    q8 = reference("q8", tables)
    assert q8.num_rows > 100
    persons = tables["person"].select(["id", "date_time"]).rename_columns(["p_id", "p_time"])
    auctions = tables["auction"].select(["id", "date_time", "seller"])
    auctions = auctions.rename_columns(["a_id", "a_time", "seller"])
    pairs = q8.join(persons, "p_id", use_threads=False).join(auctions, "a_id", use_threads=False)
    p_ms = pairs["p_time"].cast(pa.int64()).to_numpy()
    a_ms = pairs["a_time"].cast(pa.int64()).to_numpy()
    assert (pairs["p_id"].to_numpy() == pairs["seller"].to_numpy()).all()
    assert (p_ms // 10_000 == a_ms // 10_000).all()
    assert (np.abs(a_ms - p_ms) <= 10_000).all()


def test_nexmark_jitter_option_is_reachable_and_never_swallowed_by_the_runtime() -> None:
    """Seen: the jitter option shared its name with the runtime's watermark key, which
    always took it. Now it is ``jitter_ms``; the old name still works in an options table."""
    from engine import pipeline

    raw = {
        "sources": [
            {"name": "a", "type": "nexmark", "kind": "bid", "jitter_ms": 700,
             "max_out_of_orderness_ms": 5},
            {"name": "b", "type": "nexmark", "options": {"kind": "bid",
             "max_out_of_orderness_ms": 300}},
        ],
        "sinks": [{"name": "out", "type": "console"}],
    }  # fmt: skip
    p = pipeline.parse(raw)
    a, b = p.sources
    assert a.max_out_of_orderness_ms == 5 and a.options == {"kind": "bid", "jitter_ms": 700}
    assert open_source(**a.options).ooo_ms == 700
    assert open_source(**b.options).ooo_ms == 300  # the old name, inside an options table


@pytest.mark.parametrize("kind", KINDS)
def test_nexmark_columns_generate_only_those_with_the_same_values(kind: str) -> None:
    """Any subset, in any order, is exactly those columns of the whole rows (with jitter,
    over several chunks and instances): leaving a column out changes no other column."""
    events, names = 12_345, SCHEMAS[kind].names
    whole = pa.table(generate_events(kind, 5, 0, events, 1000, ooo_ms=40))
    for columns in (names[::-1], names[1::2], [names[-1]], ["date_time", names[0]]):
        got = [
            drain(open_source(j, 2, kind=kind, events=events, seed=5, events_per_second=1000,
                              batch_rows=999, jitter_ms=40, columns=columns))
            for j in range(2)
        ]  # fmt: skip
        chunks = [got[c % 2][c // 2] for c in range(sum(map(len, got)))]
        schema = pa.schema([SCHEMAS[kind].field(c) for c in columns])
        assert open_source(kind=kind, columns=columns).schema() == schema
        assert pa.Table.from_batches(chunks, schema=schema).equals(whole.select(columns))


@pytest.mark.parametrize(
    "columns,says",
    [(["auction", "seller"], "has no column 'seller'; its columns are ['auction'"),
     (["price", "price"], "lists 'price' more than once"),
     ([], "columns is empty")],
)  # fmt: skip
def test_nexmark_columns_refused_by_name(columns: list[str], says: str) -> None:
    with pytest.raises(ConfigError, match="sources.nx.columns: ") as err:
        open_source(kind="bid", columns=columns)
    assert says in str(err.value)
