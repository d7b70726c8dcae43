"""The dense-key path answers exactly what Arrow's hash group-by answers, or not at all."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ring0.operators.dense import dense_group
from tests.tables import assert_tables_match

AGGS = {("", "count_all"): "count_all", ("x", "sum"): "x_sum", ("x", "min"): "x_min",
        ("x", "max"): "x_max", ("f", "sum"): "f_sum", ("f", "min"): "f_min",
        ("f", "max"): "f_max"}  # fmt: skip


def hashed(table: pa.Table, group: list[str], aggs: dict[tuple[str, str], str]) -> pa.Table:
    spec = [([], "count_all") if fn == "count_all" else (col, fn) for col, fn in aggs]
    return table.group_by(group, use_threads=False).aggregate(spec)


def ordered(t: pa.Table, group: list[str]) -> pa.Table:
    return t.sort_by([(g, "ascending") for g in group])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    rows=st.integers(1, 3000),
    spans=st.tuples(st.integers(1, 50_000), st.integers(1, 300)),
    step=st.sampled_from([1, 1, 1000]),
    low=st.integers(-(10**6), 10**6),
    int_type=st.sampled_from([pa.int64(), pa.int32(), pa.int16(), pa.uint32()]),
    big_values=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_dense_path_equals_the_hash_path(rows, spans, step, low, int_type, big_values, seed):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    k = rng.integers(0, spans[0], rows)
    w = low + step * rng.integers(0, spans[1], rows)
    bound = 2**62 if big_values else 10**6
    table = pa.table({
        "w": pa.array(w, pa.int64()),
        "k": pa.array(k % 30_000, int_type) if int_type != pa.uint32() else pa.array(k, int_type),
        "x": pa.array(rng.integers(-bound, bound, rows), pa.int64()),
        "f": pa.array(rng.standard_normal(rows) * 1e3, pa.float64()),
    })  # fmt: skip
    group = ["w", "k"]
    got = dense_group(table, group, AGGS)
    if got is None:  # not certain: the hash path answers (integer sums that could round)
        assert big_values or spans[0] * spans[1] > max(1 << 16, 4 * rows)
        return
    want = hashed(table, group, AGGS)
    got = ordered(got, group)
    want = ordered(want, group)
    assert got.column_names == want.column_names
    assert_tables_match(got.cast(want.schema), want)


@pytest.mark.parametrize(
    ("column", "why"),
    [
        (pa.array([1.0, None, 3.0]), "a null value"),
        (pa.array([1.0, float("nan"), 3.0]), "a NaN"),
        (pa.array(["a", "b", "c"]), "not a number"),
    ],
)
def test_dense_path_declines_what_it_cannot_answer_exactly(column: pa.Array, why: str) -> None:
    table = pa.table({"k": pa.array([1, 2, 1], pa.int64()), "x": column})
    assert dense_group(table, ["k"], {("x", "min"): "x_min"}) is None, why


def test_dense_path_declines_null_or_non_integer_keys_and_distinct() -> None:
    x = pa.array([1, 2, 3], pa.int64())
    for key in (pa.array([1, None, 1], pa.int64()), pa.array(["a", "b", "a"]),
                pa.array([2**64 - 1, 0, 2**64 - 1], pa.uint64())):  # fmt: skip
        table = pa.table({"k": key, "x": x})
        assert dense_group(table, ["k"], {("", "count_all"): "count_all"}) is None
    table = pa.table({"k": pa.array([1, 2, 1], pa.int64()), "x": x})
    assert dense_group(table, ["k"], {("x", "distinct"): "x_distinct"}) is None
    sparse = pa.table({"k": pa.array([0, 7, 10**12], pa.int64()), "x": x})
    assert dense_group(sparse, ["k"], {("", "count_all"): "count_all"}) is None
    stepped = pa.table({"k": pa.array([0, 10**12, 0], pa.int64()), "x": x})  # a common step
    got = dense_group(stepped, ["k"], {("", "count_all"): "count_all", ("x", "sum"): "x_sum"})
    assert got is not None and got.sort_by("k").to_pydict() == {
        "k": [0, 10**12], "count_all": [2, 1], "x_sum": [4, 2]}  # fmt: skip


def test_a_batch_across_two_panes_of_many_keys_takes_the_dense_path() -> None:
    """Two panes (multiples of the window size) times 10,000 keys: the pane column is
    divided by its step, so the cells fit (it used to fall back to hashing)."""
    rng = np.random.default_rng(7)
    n = 65_536
    table = pa.table({
        "w": pa.array(np.where(np.arange(n) < n // 3, 4_000, 5_000), pa.int64()),
        "k": pa.array(rng.integers(0, 10_000, n), pa.int64()),
        "x": pa.array(rng.integers(-1000, 1000, n), pa.int64()),
        "f": pa.array(rng.standard_normal(n), pa.float64()),
    })  # fmt: skip
    got = dense_group(table, ["w", "k"], AGGS)
    assert got is not None
    want = ordered(hashed(table, ["w", "k"], AGGS), ["w", "k"])
    assert_tables_match(ordered(got, ["w", "k"]).cast(want.schema), want)
