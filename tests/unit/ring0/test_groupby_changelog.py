"""Running group-by over a changelog input (a ``_change`` column): weighted aggregates,
groups that reach zero rows, refused aggregates, snapshot/restore, DuckDB as the oracle."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError, DataError, StateError
from ring0.operators import dense, grouping
from ring0.operators.groupby import GroupByAggregate
from tests.unit.ring0.test_window import aggs, ipc_round_trip, rows

SCHEMA = pa.schema(
    [("k", pa.string()), ("v", pa.int64()), ("p", pa.float64()), ("_change", pa.int8())]
)


def cl(k: list, v: list, change: list, p: list | None = None) -> pa.RecordBatch:
    """A changelog batch: key, int value, change; float ``p`` defaults to ``v`` as floats."""
    p = [None if x is None else float(x) for x in v] if p is None else p
    return pa.record_batch({"k": k, "v": v, "p": p, "_change": change}, schema=SCHEMA)


def drive(op: GroupByAggregate, batches: Sequence[pa.RecordBatch]) -> list[pa.RecordBatch]:
    out = [o for x in batches for o in op.process(x)] + op.finish()
    for o in out:
        assert o.schema.equals(op.output_schema)
    return out


# -- the weighted aggregates -----------------------------------------------------------------


def test_groupby_changelog_count_is_sum_of_change() -> None:
    op = GroupByAggregate(["k"], aggs("count", "count(*) as n"), SCHEMA)
    op.process(cl(["a", "a", "a", "b"], [1, 2, 3, 4], [1, 1, 1, 1]))
    out = rows(op.process(cl(["a", "a"], [1, 2], [-1, -1])))
    assert out == [
        {"k": "a", "count": 1, "n": 1, "_change": 1},
        {"k": "a", "count": 3, "n": 3, "_change": -1},
    ]


def test_groupby_changelog_count_of_column_counts_non_null_rows_weighted() -> None:
    op = GroupByAggregate(["k"], aggs("count(v)", "count"), SCHEMA)
    op.process(cl(["a", "a", "a"], [1, None, 3], [1, 1, 1]))
    out = rows(op.process(cl(["a", "a"], [None, 3], [-1, -1])))
    assert out == [
        {"k": "a", "count_v": 1, "count": 1, "_change": 1},
        {"k": "a", "count_v": 2, "count": 3, "_change": -1},
    ]


def test_groupby_changelog_sum_and_avg_subtract_retracted_values() -> None:
    op = GroupByAggregate(["k"], aggs("sum(v)", "avg(v)", "sum(p)", "avg(p)"), SCHEMA)
    op.process(cl(["a", "a", "a"], [2, 4, 9], [1, 1, 1]))
    out = rows(op.process(cl(["a", "a"], [9, 6], [-1, 1])))  # update 9 -> 6
    assert out == [
        {"k": "a", "sum_v": 12, "avg_v": 4.0, "sum_p": 12.0, "avg_p": 4.0, "_change": 1},
        {"k": "a", "sum_v": 15, "avg_v": 5.0, "sum_p": 15.0, "avg_p": 5.0, "_change": -1},
    ]


def test_groupby_changelog_float_sum_before_integer_sum_keeps_each_type() -> None:
    op = GroupByAggregate(["k"], aggs("sum(p)", "sum(v)", "avg(v)"), SCHEMA)
    op.process(cl(["a", "a"], [3, 4], [1, 1], p=[0.5, 0.25]))
    out = op.process(cl(["a"], [4], [-1], p=[0.25]))
    assert rows(out) == [
        {"k": "a", "sum_p": 0.5, "sum_v": 3, "avg_v": 3.0, "_change": 1},
        {"k": "a", "sum_p": 0.75, "sum_v": 7, "avg_v": 3.5, "_change": -1},
    ]
    assert out[0].schema.field("sum_v").type == pa.int64()


def test_groupby_changelog_sum_with_only_nulls_left_is_null_not_zero() -> None:
    op = GroupByAggregate(["k"], aggs("count", "sum(v)", "avg(v)", "sum(p)"), SCHEMA)
    op.process(cl(["a", "a"], [5, None], [1, 1]))
    out = rows(op.process(cl(["a"], [5], [-1])))
    assert out[0] == {
        "k": "a",
        "count": 1,
        "sum_v": None,
        "avg_v": None,
        "sum_p": None,
        "_change": 1,
    }


def test_groupby_changelog_expression_aggregate_is_weighted() -> None:
    op = GroupByAggregate(["k"], aggs("sum(v * p) as notional", "avg(v + 1) as a1"), SCHEMA)
    op.process(cl(["a", "a"], [2, 3], [1, 1], p=[10.0, 100.0]))  # 20 + 300
    out = rows(op.process(cl(["a", "a"], [3, 4], [-1, 1], p=[100.0, 0.5])))  # 300 -> 2
    assert out == [
        {"k": "a", "notional": 22.0, "a1": 4.0, "_change": 1},
        {"k": "a", "notional": 320.0, "a1": 3.5, "_change": -1},
    ]


def test_groupby_changelog_change_above_one_counts_as_that_many_rows() -> None:
    op = GroupByAggregate(["k"], aggs("count", "sum(v)"), SCHEMA)
    assert rows(op.process(cl(["a"], [5], [3]))) == [
        {"k": "a", "count": 3, "sum_v": 15, "_change": 1}
    ]


def test_groupby_changelog_update_that_changes_key_moves_the_row() -> None:
    op = GroupByAggregate(["k"], aggs("count", "sum(v)"), SCHEMA)
    op.process(cl(["a", "a", "b"], [1, 2, 7], [1, 1, 1]))
    out = rows(op.process(cl(["a", "b"], [2, 2], [-1, 1])))
    assert out == [
        {"k": "a", "count": 1, "sum_v": 1, "_change": 1},
        {"k": "a", "count": 2, "sum_v": 3, "_change": -1},
        {"k": "b", "count": 1, "sum_v": 7, "_change": -1},
        {"k": "b", "count": 2, "sum_v": 9, "_change": 1},
    ]


# -- groups that reach zero rows -------------------------------------------------------------


def test_groupby_changelog_group_at_zero_rows_emits_only_its_retraction() -> None:
    op = GroupByAggregate(["k"], aggs("count", "sum(v)"), SCHEMA)
    op.process(cl(["a", "b"], [1, 2], [1, 1]))
    out = rows(op.process(cl(["a"], [1], [-1])))
    assert out == [{"k": "a", "count": 1, "sum_v": 1, "_change": -1}]
    assert op.groups == 1


def test_groupby_changelog_group_that_comes_back_is_emitted_fresh() -> None:
    op = GroupByAggregate(["k"], aggs("count", "sum(p)"), SCHEMA)
    op.process(cl(["a", "a"], [1, 2], [1, 1], p=[0.1, 0.2]))
    op.process(cl(["a", "a"], [1, 2], [-1, -1], p=[0.1, 0.2]))
    out = rows(op.process(cl(["a"], [5], [1], p=[0.7])))
    assert out == [{"k": "a", "count": 1, "sum_p": 0.7, "_change": 1}]  # no float residue


def test_groupby_changelog_insert_and_delete_in_one_batch_emit_nothing() -> None:
    op = GroupByAggregate(["k"], aggs("count", "sum(v)"), SCHEMA)
    assert op.process(cl(["a", "a"], [1, 1], [1, -1])) == []
    assert op.groups == 0


def test_groupby_changelog_global_group_disappears_at_zero_rows() -> None:
    op = GroupByAggregate([], aggs("count", "sum(v)"), SCHEMA)
    op.process(cl(["a"], [4], [1]))
    assert rows(op.process(cl(["a"], [4], [-1]))) == [{"count": 1, "sum_v": 4, "_change": -1}]
    assert rows(op.process(cl(["b"], [6], [1]))) == [{"count": 1, "sum_v": 6, "_change": 1}]


def test_groupby_changelog_close_mode_does_not_emit_groups_with_zero_rows() -> None:
    op = GroupByAggregate(["k"], aggs("count", "sum(v)"), SCHEMA, emit="close")
    for i in range(40):  # past the compaction point
        assert op.process(cl(["a", "b", "c"], [i, i, 1], [1, 1, 1])) == []
        assert op.process(cl(["a", "c"], [i, 1], [-1, -1])) == []
    assert rows(op.finish()) == [{"k": "b", "count": 40, "sum_v": 780}]


def test_groupby_changelog_output_has_no_column_for_the_input_change() -> None:
    update = GroupByAggregate(["k"], aggs("count"), SCHEMA)
    close = GroupByAggregate(["k"], aggs("count"), SCHEMA, emit="close")
    assert update.output_schema.names == ["k", "count", "_change"]
    assert close.output_schema.names == ["k", "count"]


# -- refused configurations ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "min(v)",
        "max(p) as top",
        "count_distinct(v)",
        "count(distinct v)",
        "max_by(k, v)",
        "min_by(k, p)",
    ],
)
def test_groupby_changelog_unretractable_aggregate_raises_config_error(text: str) -> None:
    spec = aggs(text)[0]
    with pytest.raises(ConfigError) as info:
        GroupByAggregate(["k"], aggs("count", text), SCHEMA)
    message = str(info.value)
    assert repr(spec.text) in message and "changelog input" in message
    assert "cannot forget a value" in message and "count, sum or avg" in message


def test_groupby_changelog_unretractable_aggregate_allowed_without_change_column() -> None:
    plain = pa.schema([f for f in SCHEMA if f.name != "_change"])
    op = GroupByAggregate(["k"], aggs("min(v)", "max(v)"), plain)
    assert rows(op.process(pa.record_batch({"k": ["a"], "v": [1], "p": [1.0]}, schema=plain)))


@pytest.mark.parametrize(
    ("key", "texts", "message"),
    [
        (["_change"], ["count"], "key column '_change' is the change"),
        (["k"], ["sum(_change)"], "reads '_change'"),
        (["k"], ["sum(v * _change) as x"], "reads '_change'"),
        (["k"], ["count as _change"], "occur twice"),
    ],
)
def test_groupby_changelog_change_as_key_input_or_output_raises_config_error(
    key: list[str], texts: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        GroupByAggregate(key, aggs(*texts), SCHEMA)


@pytest.mark.parametrize("t", [pa.string(), pa.float64(), pa.uint8()])
def test_groupby_changelog_change_not_signed_integer_raises_config_error(t: pa.DataType) -> None:
    schema = pa.schema([("k", pa.string()), ("_change", t)])
    with pytest.raises(ConfigError, match="signed integer"):
        GroupByAggregate(["k"], aggs("count"), schema)


def test_groupby_changelog_null_change_raises_data_error() -> None:
    op = GroupByAggregate(["k"], aggs("count"), SCHEMA)
    with pytest.raises(DataError, match="_change is null in 1 of 2 rows"):
        op.process(cl(["a", "b"], [1, 2], [1, None]))


# -- state -----------------------------------------------------------------------------------


@pytest.mark.parametrize("emit", ["close", "update"])
def test_groupby_changelog_snapshot_restore_continues_identically(emit: str) -> None:
    batches = changelog_batches(np.random.default_rng(11), ops=300, keys=["a", "b", "c"])
    texts = ("count", "sum(amount)", "avg(price)", "count(price)")
    whole = GroupByAggregate(["grp"], aggs(*texts), batches[0].schema, emit=emit)
    expected = drive(whole, batches)
    cut = len(batches) // 2
    first = GroupByAggregate(["grp"], aggs(*texts), batches[0].schema, emit=emit)
    out = [o for x in batches[:cut] for o in first.process(x)]
    second = GroupByAggregate(["grp"], aggs(*texts), batches[0].schema, emit=emit)
    second.restore(ipc_round_trip(first.snapshot()))
    out += drive(second, batches[cut:])
    assert rows(out) == rows(expected)


def test_groupby_changelog_restore_of_state_of_plain_input_raises_state_error() -> None:
    plain = pa.schema([f for f in SCHEMA if f.name != "_change"])
    old = GroupByAggregate(["k"], aggs("count"), plain)
    old.process(pa.record_batch({"k": ["a"], "v": [1], "p": [1.0]}, schema=plain))
    state = old.snapshot()
    meta = dict(state["groups"].schema.metadata)
    del meta[b"input"]  # as a snapshot written before changelog inputs were weighted
    legacy = {"groups": state["groups"].replace_schema_metadata(meta)}
    with pytest.raises(StateError, match="input=rows.*changelog"):
        GroupByAggregate(["k"], aggs("count"), SCHEMA).restore(legacy)
    with pytest.raises(StateError, match="input=changelog.*rows"):
        GroupByAggregate(["k"], aggs("count"), plain).restore(
            GroupByAggregate(["k"], aggs("count"), SCHEMA).snapshot()
        )


def test_groupby_snapshot_without_input_metadata_restores_as_plain_input() -> None:
    plain = pa.schema([f for f in SCHEMA if f.name != "_change"])
    old = GroupByAggregate(["k"], aggs("count"), plain)
    old.process(pa.record_batch({"k": ["a"], "v": [1], "p": [1.0]}, schema=plain))
    state = old.snapshot()
    meta = dict(state["groups"].schema.metadata)
    del meta[b"input"]
    op = GroupByAggregate(["k"], aggs("count"), plain)
    op.restore({"groups": state["groups"].replace_schema_metadata(meta)})
    out = op.process(pa.record_batch({"k": ["a"], "v": [2], "p": [2.0]}, schema=plain))
    assert rows(out) == [
        {"k": "a", "count": 1, "_change": -1},
        {"k": "a", "count": 2, "_change": 1},
    ]


# -- the dense path --------------------------------------------------------------------------


def test_groupby_changelog_dense_path_gives_the_hash_path_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches = changelog_batches(np.random.default_rng(3), ops=400, keys=[1, 2, 3, 4], nulls=False)
    texts = ("count", "sum(amount)", "sum(price)", "avg(amount)")
    answered = []

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        res = real(*args, **kwargs)
        answered.append(res is not None)
        return res

    real = grouping.dense_group
    monkeypatch.setattr(grouping, "dense_group", spy)
    fast = drive(GroupByAggregate(["grp"], aggs(*texts), batches[0].schema), batches)
    assert any(answered)  # the dense path did take the weighted sums
    monkeypatch.setattr(dense, "ENABLED", False)
    slow = drive(GroupByAggregate(["grp"], aggs(*texts), batches[0].schema), batches)
    got, want = fold_changelog(fast, ["grp"]), fold_changelog(slow, ["grp"])
    assert got.keys() == want.keys() and len(got) > 0
    for k, row in got.items():
        assert row == pytest.approx(want[k], rel=1e-9)


# -- against DuckDB --------------------------------------------------------------------------

TEXTS = (
    "count",
    "count(price)",
    "count(amount)",
    "sum(amount)",
    "avg(amount)",
    "sum(price)",
    "avg(price)",
    "sum(amount * price) as notional",
)
ORACLE = (
    "select grp, count(*), count(price), count(amount), sum(amount)::bigint, avg(amount), "
    "sum(price), avg(price), sum(amount * price) from final group by grp"
)


def changelog_batches(
    rng: np.random.Generator, ops: int, keys: list, nulls: bool = True, table: dict | None = None
) -> list[pa.RecordBatch]:
    """Random inserts, updates (some moving a row to another group) and deletes on a table
    ``id -> (grp, amount, price)`` (``table``, updated in place), as changelog batches of
    random sizes (an update's -1 and +1 rows may fall in different batches)."""
    table = {} if table is None else table
    out_rows: list[tuple] = []

    def value() -> tuple:
        amount = None if nulls and rng.random() < 0.1 else int(rng.integers(-50, 50))
        price = None if nulls and rng.random() < 0.2 else float(rng.uniform(-100, 100))
        grp = keys[int(rng.integers(len(keys)))]
        return grp, amount, price

    next_id = max(table, default=-1) + 1
    for _ in range(ops):
        action = rng.random()
        if action < 0.45 or not table:
            table[next_id] = value()
            out_rows.append((*table[next_id], 1))
            next_id += 1
            continue
        row_id = list(table)[int(rng.integers(len(table)))]
        out_rows.append((*table.pop(row_id), -1))
        if action < 0.8:  # an update: same or another group
            grp, amount, price = value()
            old_grp = out_rows[-1][0]
            new = (old_grp if rng.random() < 0.5 else grp, amount, price)
            table[row_id] = new
            out_rows.append((*new, 1))
    key_type = pa.string() if isinstance(keys[0], str) else pa.int64()
    schema = pa.schema(
        [
            ("grp", key_type),
            ("amount", pa.int64()),
            ("price", pa.float64()),
            ("_change", pa.int8()),
        ]
    )
    batches, i = [], 0
    while i < len(out_rows):
        n = int(rng.integers(1, 40))
        cols = list(zip(*out_rows[i : i + n], strict=True))
        batches.append(pa.record_batch([pa.array(c) for c in cols], schema=schema))
        i += n
    return batches


def fold_changelog(out: Sequence[pa.RecordBatch], key: list[str]) -> dict[tuple, dict]:
    """Apply an update-mode changelog in order: a -1 row removes its group's current row (and
    must equal it), a +1 row sets it (the group must have none)."""
    current: dict[tuple, dict] = {}
    for batch in out:
        for r in batch.to_pylist():
            change = r.pop("_change")
            k = tuple(r[c] for c in key)
            if change == -1:
                assert current.pop(k) == r, f"retraction of {k} is not its current row"
            else:
                assert change == 1 and k not in current, f"insert of {k} over a current row"
                current[k] = r
    return current


def oracle(table: dict, key_type: pa.DataType) -> dict[tuple, dict]:
    schema = pa.schema([("grp", key_type), ("amount", pa.int64()), ("price", pa.float64())])
    final = pa.Table.from_pylist(
        [dict(zip(schema.names, v, strict=True)) for v in table.values()], schema=schema
    )
    con = duckdb.connect()
    con.register("final", final)
    names = ["grp"] + [aggs(t)[0].name for t in TEXTS]
    return {(r[0],): dict(zip(names, r, strict=True)) for r in con.sql(ORACLE).fetchall()}


def assert_matches(got: dict[tuple, dict], want: dict[tuple, dict]) -> None:
    assert got.keys() == want.keys()
    for k, row in got.items():
        for name, value in row.items():
            expected = want[k][name]
            if isinstance(expected, float):
                assert value == pytest.approx(expected, rel=1e-9, abs=1e-6), (k, name)
            else:
                assert value == expected, (k, name)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    ops=st.integers(1, 300),
    int_keys=st.booleans(),
    cut=st.floats(0, 1),
)
def test_groupby_changelog_applied_matches_duckdb_on_the_final_table(
    seed: int, ops: int, int_keys: bool, cut: float
) -> None:
    rng = np.random.default_rng(seed)
    keys: list = [1, 2, 3, None] if int_keys else ["a", "b", "c", "d", "e"]
    keys = keys[: int(rng.integers(1, len(keys) + 1))]
    table: dict = {}
    batches = changelog_batches(rng, ops, keys, table=table)
    key_type = batches[0].schema.field("grp").type
    schema = batches[0].schema
    at = int(cut * len(batches))
    update = GroupByAggregate(["grp"], aggs(*TEXTS), schema)
    close = GroupByAggregate(["grp"], aggs(*TEXTS), schema, emit="close")
    out = [o for x in batches[:at] for o in update.process(x)]
    for x in batches[:at]:
        close.process(x)
    update2 = GroupByAggregate(["grp"], aggs(*TEXTS), schema)
    update2.restore(ipc_round_trip(update.snapshot()))
    close2 = GroupByAggregate(["grp"], aggs(*TEXTS), schema, emit="close")
    close2.restore(ipc_round_trip(close.snapshot()))
    out += drive(update2, batches[at:])
    want = oracle(table, key_type)
    current = fold_changelog(out, ["grp"])
    assert_matches(current, want)
    assert update2.groups == len(want)
    final = drive(close2, batches[at:])
    assert_matches({(r["grp"],): r for r in rows(final)}, want)
