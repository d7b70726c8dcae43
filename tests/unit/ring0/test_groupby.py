"""Running group-by: changelog per batch, final values at finish, snapshot/restore, DuckDB."""

from __future__ import annotations

from collections import Counter

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError, StateError
from ring0.operators.groupby import GroupByAggregate
from tests.unit.ring0.test_window import aggs, consolidate, ipc_round_trip, rows

SCHEMA = pa.schema([("k", pa.string()), ("v", pa.int64())])


def b(k: list, v: list) -> pa.RecordBatch:
    return pa.record_batch({"k": k, "v": v}, schema=SCHEMA)


def test_groupby_update_emits_retraction_and_new_value_per_touched_key() -> None:
    op = GroupByAggregate(["k"], aggs("count", "sum(v)"), SCHEMA)
    assert rows(op.process(b(["a", "b", "a"], [1, 2, 3]))) == [
        {"k": "a", "count": 2, "sum_v": 4, "_change": 1},
        {"k": "b", "count": 1, "sum_v": 2, "_change": 1},
    ]
    assert rows(op.process(b(["a", "c"], [10, 5]))) == [
        {"k": "a", "count": 2, "sum_v": 4, "_change": -1},
        {"k": "a", "count": 3, "sum_v": 14, "_change": 1},
        {"k": "c", "count": 1, "sum_v": 5, "_change": 1},
    ]
    assert op.on_watermark(10**9) == [] and op.finish() == [] and op.groups == 3


def test_groupby_close_emits_final_values_once_at_finish() -> None:
    op = GroupByAggregate(["k"], aggs("count", "max(v)"), SCHEMA, emit="close")
    for i in range(40):  # past the compaction point
        assert op.process(b(["a", "b"], [i, -i])) == []
    assert op.output_schema.names == ["k", "count", "max_v"]
    assert rows(op.finish()) == [
        {"k": "a", "count": 40, "max_v": 39},
        {"k": "b", "count": 40, "max_v": 0},
    ]
    assert op.finish() == []


def test_groupby_global_key_one_group() -> None:
    op = GroupByAggregate([], aggs("count_distinct(k)"), SCHEMA)
    op.process(b(["a", "b"], [1, 2]))
    out = rows(op.process(b(["a", "c"], [1, 2])))
    assert out == [{"count_distinct_k": 2, "_change": -1}, {"count_distinct_k": 3, "_change": 1}]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": ["nope"]}, "column 'nope' is not in the input"),
        ({"key": ["v"], "aggregates": aggs("sum(k)")}, "sum needs an integer"),
        ({"aggregates": []}, "at least one aggregate"),
        ({"emit": "later"}, "emit='later'"),
        ({"aggregates": aggs("count as k")}, "occur twice"),
    ],
)
def test_groupby_bad_configuration_rejected(kwargs: dict, message: str) -> None:
    args = {"key": ["k"], "aggregates": aggs("count"), "input_schema": SCHEMA, **kwargs}
    with pytest.raises(ConfigError, match=message):
        GroupByAggregate(**args)


@pytest.mark.parametrize("emit", ["close", "update"])
def test_groupby_snapshot_restore_continues_identically(emit: str) -> None:
    rng = np.random.default_rng(5)
    batches = [
        b(rng.choice(["a", "b", "c", "d"], 30).tolist(), rng.integers(0, 9, 30).tolist())
        for _ in range(20)
    ]
    texts = ("count", "avg(v)", "max_by(k, v)", "count_distinct(v)")
    whole = GroupByAggregate(["k"], aggs(*texts), SCHEMA, emit=emit)
    expected = [o for x in batches for o in whole.process(x)] + whole.finish()
    first = GroupByAggregate(["k"], aggs(*texts), SCHEMA, emit=emit)
    out = [o for x in batches[:17] for o in first.process(x)]
    second = GroupByAggregate(["k"], aggs(*texts), SCHEMA, emit=emit)
    second.restore(ipc_round_trip(first.snapshot()))
    out += [o for x in batches[17:] for o in second.process(x)] + second.finish()
    assert rows(out) == rows(expected)


def test_groupby_restore_of_foreign_state_raises_state_error() -> None:
    op = GroupByAggregate(["k"], aggs("count"), SCHEMA)
    with pytest.raises(StateError, match="expected"):
        op.restore({"slots": pa.table({"x": [1]})})
    other = GroupByAggregate(["k"], aggs("sum(v)"), SCHEMA)
    with pytest.raises(StateError, match="schema"):
        other.restore(op.snapshot())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_batches=st.integers(1, 8))
def test_groupby_changelog_applied_matches_duckdb(seed: int, n_batches: int) -> None:
    rng = np.random.default_rng(seed)
    batches = [
        b(rng.choice(["a", "b", "c", None], n).tolist(), rng.integers(-5, 5, n).tolist())
        for n in rng.integers(0, 30, n_batches)
    ]
    op = GroupByAggregate(["k"], aggs("count", "sum(v)", "min(v)"), SCHEMA)
    out = [o for x in batches for o in op.process(x)]
    weighted: Counter = Counter()
    for r in rows(out):
        weighted[r["k"]] += r["_change"] * r["count"]
    everything = pa.Table.from_batches(batches, SCHEMA)  # noqa: F841 (read by DuckDB)
    ref = duckdb.sql(
        'select k, count(*) as "count", sum(v)::bigint as sum_v, min(v) as min_v '
        "from everything group by k"
    ).to_arrow_table()
    assert consolidate(out) == rows(ref.to_batches())
    assert {k: c for k, c in weighted.items() if c} == {r["k"]: r["count"] for r in ref.to_pylist()}
