"""Session windows: gap merging, bridging rows, lateness against closed sessions, update mode."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from ring0.operators.window import WindowAggregate, WindowSpec
from tests.unit.ring0.test_window import (
    SCHEMA,
    aggs,
    batch,
    consolidate,
    drive,
    resumed,
    rows,
)

GAP = WindowSpec("session", gap_ms=10)


def session_op(emit: str = "close", **kwargs: object) -> WindowAggregate:
    return WindowAggregate(
        ["key"], "ts", GAP, aggs("count", "sum(value)"), SCHEMA, emit=emit, **kwargs
    )  # type: ignore[arg-type]


def spans(out: list[pa.RecordBatch]) -> list[tuple]:
    return sorted((r["key"], r["window_start"], r["window_end"], r["count"]) for r in rows(out))


def test_session_rows_at_most_gap_apart_join_and_more_than_gap_split() -> None:
    op = session_op()
    out = drive(op, [batch([0, 10, 21, 40, 5, 100], [1, 1, 1, 1, 2, 2])])
    assert spans(out) == [
        (1, 0, 20, 2),
        (1, 21, 31, 1),
        (1, 40, 50, 1),
        (2, 5, 15, 1),
        (2, 100, 110, 1),
    ]


def test_session_closes_when_watermark_reaches_last_event_plus_gap() -> None:
    op = session_op()
    op.process(batch([0, 4], [1, 1]))
    assert op.on_watermark(13) == [] and op.open_windows == 1
    assert spans(op.on_watermark(14)) == [(1, 0, 14, 2)] and op.open_windows == 0


def test_session_out_of_order_row_bridging_two_open_sessions_merges_them() -> None:
    op = session_op(emit="update")
    first = op.process(batch([0, 20], [1, 1], [1, 2]))
    assert spans(first) == [(1, 0, 10, 1), (1, 20, 30, 1)]
    bridge = rows(op.process(batch([10], [1], [4])))  # exactly gap from both
    assert [(r["window_start"], r["window_end"], r["count"], r["_change"]) for r in bridge] == [
        (0, 10, 1, -1),
        (0, 30, 3, 1),
        (20, 30, 1, -1),
    ]
    assert op.open_windows == 1
    close = session_op()
    assert spans(drive(close, [batch([0, 20], [1, 1]), batch([10], [1])])) == [(1, 0, 30, 3)]


def test_session_row_inside_an_open_session_extends_nothing() -> None:
    op = session_op(emit="update")
    op.process(batch([0, 8], [1, 1]))
    (changes,) = op.process(batch([3], [1]))
    assert [(r["window_end"], r["count"], r["_change"]) for r in rows([changes])] == [
        (18, 2, -1),
        (18, 3, 1),
    ]


def test_session_row_behind_watermark_by_gap_is_late() -> None:
    op = session_op(keep_late=True)
    op.process(batch([50], [2]))
    op.on_watermark(30)
    op.process(batch([20, 21], [1, 1]))  # 20 + 10 <= 30: late; 21 + 10 > 30: a new session
    assert op.late_rows == 1 and [b.column("ts").to_pylist() for b in op.take_late()] == [[20]]
    assert spans(op.finish()) == [(1, 21, 31, 1), (2, 50, 60, 1)]


def test_session_row_within_gap_of_a_closed_session_is_late_not_a_second_session() -> None:
    op = session_op(keep_late=True)
    op.process(batch([0, 5], [1, 1]))
    assert spans(op.on_watermark(15)) == [(1, 0, 15, 2)]
    # 14 is not behind the watermark by a gap, but joins the emitted session [0, 15): late.
    # 16 is more than gap after the closed session's last event (5): a new session.
    assert op.process(batch([14, 16], [1, 1])) == []
    assert op.late_rows == 1 and op.take_late()[0].column("ts").to_pylist() == [14]
    assert spans(op.finish()) == [(1, 16, 26, 1)]


def test_session_batch_of_only_rows_reaching_closed_sessions_is_all_late() -> None:
    for emit in ("close", "update"):
        op = session_op(emit)
        op.process(batch([0], [1]))
        op.on_watermark(10)
        assert op.process(batch([9, 10], [1, 1])) == []
        assert op.late_rows == 2 and op.open_windows == 0


def test_session_closed_sessions_forgotten_once_no_row_can_reach_them() -> None:
    op = session_op(allowed_lateness_ms=5)
    op.process(batch([0, 100], [1, 2]))
    op.on_watermark(15)  # closes key 1's session (last 0): reachable while wm < 0 + 2*10 + 5
    assert op.snapshot()["closed_sessions"].num_rows == 1
    op.on_watermark(25)
    assert op.snapshot()["closed_sessions"].num_rows == 0


def test_session_update_changelog_weighted_counts_equal_final_counts() -> None:
    steps = [
        batch([0, 30, 60], [1, 1, 2]),
        batch([15, 45, 61], [1, 1, 2]),
        batch([100, 5], [1, 2]),
        50,
        batch([52, 110], [1, 1]),
    ]
    out = drive(session_op(emit="update"), steps)
    weighted: Counter = Counter()
    for r in rows(out):
        weighted[(r["key"], r["window_start"])] += r["_change"] * r["count"]
    final = drive(session_op(), steps)
    assert {k: v for k, v in weighted.items() if v} == {
        (r["key"], r["window_start"]): r["count"] for r in rows(final)
    }
    assert consolidate(out) == rows(final)


def test_session_string_and_multi_column_keys_with_nulls_merge_per_key() -> None:
    schema = pa.schema(
        [("ts", pa.int64()), ("a", pa.string()), ("b", pa.int64()), ("value", pa.int64())]
    )
    steps = [
        pa.record_batch(
            {
                "ts": [0, 5, 0, 20],
                "a": ["x", "x", None, None],
                "b": [1, 1, 1, 1],
                "value": [1, 2, 3, 4],
            },
            schema=schema,
        ),
        pa.record_batch(
            {"ts": [10, 18, 8], "a": [None, "x", "x"], "b": [1, 1, 2], "value": [5, 6, 7]},
            schema=schema,
        ),
    ]
    op = WindowAggregate(["a", "b"], "ts", GAP, aggs("sum(value)"), schema)
    out = [
        (r["a"], r["b"], r["window_start"], r["window_end"], r["sum_value"])
        for r in rows(drive(op, steps))
    ]
    assert sorted(out, key=str) == sorted(
        [("x", 1, 0, 15, 3), ("x", 1, 18, 28, 6), ("x", 2, 8, 18, 7), (None, 1, 0, 30, 12)], key=str
    )


def test_session_global_key_sessions_over_all_rows() -> None:
    op = WindowAggregate([], "ts", GAP, aggs("count"), SCHEMA)
    out = rows(drive(op, [batch([0, 9, 18, 40], [1, 2, 3, 4])]))
    assert [(r["window_start"], r["window_end"], r["count"]) for r in out] == [
        (0, 28, 3),
        (40, 50, 1),
    ]


@pytest.mark.parametrize("emit", ["close", "update"])
@pytest.mark.parametrize("cut", [1, 3, 5])
def test_session_snapshot_restore_mid_stream_gives_identical_output(emit: str, cut: int) -> None:
    steps = [
        batch([0, 30, 60], [1, 1, 2], [1, 2, 3]),
        batch([15, 45, 61], [1, 1, 2], [4, 5, 6]),
        20,
        batch([100, 5, 2], [1, 2, 1], [7, 8, 9]),
        70,
        batch([52, 110, 75], [1, 1, 2]),
        200,
    ]

    def make() -> WindowAggregate:
        return WindowAggregate(
            ["key"],
            "ts",
            GAP,
            aggs("count", "max_by(value, ts)", "count_distinct(value)"),
            SCHEMA,
            emit=emit,
            keep_late=True,
        )

    whole = make()
    expected = drive(whole, steps)
    assert whole.late_rows > 0
    assert rows(resumed(make, steps, cut)) == rows(expected)
