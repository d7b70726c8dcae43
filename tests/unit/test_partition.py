"""The shuffle's hash: any key type, by value only, stable across batches, layouts and releases."""

from __future__ import annotations

import datetime as dt
import decimal

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError
from ring1.partition import check_key_type, partition_ids, split


def ids(col: pa.Array, n: int = 1000) -> list[int]:
    return partition_ids([col], n).tolist()


def test_known_values_never_move() -> None:
    """Checkpoints hold each worker's keys: a new release must send a key where it went."""
    assert ids(pa.array(["user-000001", "user-000002", "", "a" * 30, "x" * 100])) == [
        811, 601, 460, 702, 115,
    ]  # fmt: skip
    assert partition_ids(np.array([0, 1, 2, 12345, -7]), 1000).tolist() == [0, 769, 242, 259, 93]
    assert ids(pa.array([0, 1, 2, 12345, -7], pa.int64())) == [0, 769, 242, 259, 93]


def test_equal_values_hash_alike_in_every_layout() -> None:
    s = pa.array(["a", "bb", "", None, "user-000123", "ü" * 9] * 3)
    want = ids(s)
    for variant in (s.cast(pa.large_string()), s.cast(pa.string_view()), s.dictionary_encode(),
                    s.cast(pa.binary()), s.cast(pa.large_binary())):  # fmt: skip
        assert ids(variant) == want, variant.type
    assert ids(s.slice(6, 6)) == want[6:12]
    ints = pa.array([1, -2, None, 300], pa.int32())
    for t in (pa.int16(), pa.int64()):
        assert ids(ints.cast(t)) == ids(ints)
    assert ids(pa.array([1, 300], pa.uint32())) == ids(pa.array([1, 300], pa.int64()))
    assert ids(ints.cast(pa.int64()).dictionary_encode()) == ids(ints)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=80)), min_size=1, max_size=60), st.data())
def test_a_value_hashes_alike_whatever_else_its_batch_holds(values, data) -> None:  # type: ignore[no-untyped-def]
    alone = ids(pa.array(values, pa.binary()))
    other = data.draw(st.lists(st.binary(max_size=200), max_size=5))
    mixed = ids(pa.array(other + values, pa.binary()))[len(other) :]
    assert mixed == alone
    nulls = [i for i, v in enumerate(values) if v is None]
    assert len({alone[i] for i in nulls}) <= 1  # null keys meet in one worker


def test_every_key_type_partitions() -> None:
    cols = [
        pa.array([True, False, None]),
        pa.array([dt.datetime(2024, 1, 1), None, dt.datetime(2025, 1, 1)], pa.timestamp("ms")),
        pa.array([dt.date(2024, 1, 1), None, dt.date(2025, 1, 1)]),
        pa.array([decimal.Decimal("1.50"), None, decimal.Decimal("-2.25")], pa.decimal128(10, 2)),
        pa.array([decimal.Decimal("1.5"), None, decimal.Decimal("2")], pa.decimal256(40, 2)),
        pa.array([0.0, None, float("nan")]),
        pa.array([b"ab", None, b"cd"], pa.binary(2)),
        pa.array([None, None, None], pa.null()),
        pa.array([dt.timedelta(seconds=1), None, dt.timedelta(0)]),
    ]
    for col in cols:
        check_key_type(col.type, "k")
        got = ids(col, 7)
        assert all(0 <= g < 7 for g in got)
    assert ids(pa.array([0.0, -0.0])) == ids(pa.array([0.0, 0.0]))
    assert ids(pa.array([float("nan"), -float("nan")])) == ids(pa.array([float("nan")] * 2))
    with pytest.raises(ConfigError, match="cannot partition by a column of type list"):
        check_key_type(pa.list_(pa.int64()), "query.steps[0]: key column 'x'")


def test_several_columns_combine_in_order_and_split_keeps_keys_together() -> None:
    a, b = pa.array(["x", "y"] * 500), pa.array(list(range(1000)))
    assert partition_ids([a, b], 16).tolist() != partition_ids([b, a], 16).tolist()
    rng = np.random.default_rng(0)
    users = pa.array([f"user-{u:06d}" for u in rng.integers(0, 3000, 50_000).tolist()])
    batch = pa.record_batch({"user": users, "row": np.arange(50_000)})
    parts = split(batch, ["user"], 4)
    assert sum(p.num_rows for p in parts) == 50_000
    owner: dict[str, int] = {}
    for i, part in enumerate(parts):
        for u in set(part.column("user").to_pylist()):
            assert owner.setdefault(u, i) == i
        assert (np.diff(part.column("row").to_numpy()) > 0).all()
    counts = np.array([p.num_rows for p in parts])
    assert counts.max() / counts.mean() < 1.1  # 3,000 uniform keys spread evenly
