"""Hopping windows: panes, partially late rows, freeing panes, update mode, snapshot/restore."""

from __future__ import annotations

import pytest

from ring0.operators.window import WindowAggregate, WindowSpec
from tests.unit.ring0.test_window import SCHEMA, aggs, batch, consolidate, drive, resumed, rows

HOP = WindowSpec("hopping", size_ms=30, slide_ms=10)


def hop_op(emit: str = "close", **kwargs: object) -> WindowAggregate:
    return WindowAggregate(
        ["key"], "ts", HOP, aggs("count", "sum(value)"), SCHEMA, emit=emit, **kwargs
    )  # type: ignore[arg-type]


def counts(out: list) -> list[tuple[int, int, int]]:
    return [(r["window_start"], r["window_end"], r["count"]) for r in rows(out)]


def test_hopping_row_counts_in_size_over_slide_windows_boundaries_half_open() -> None:
    out = drive(hop_op(), [batch([0, 9, 10, -1], [1, 1, 1, 1])])
    assert sorted(counts(out)) == [(-30, 0, 1), (-20, 10, 3), (-10, 20, 4), (0, 30, 3), (10, 40, 1)]


def test_hopping_row_late_for_some_windows_counts_only_in_the_open_ones() -> None:
    op = hop_op(keep_late=True)
    op.process(batch([0], [1]))
    assert sorted(counts(op.on_watermark(20))) == [(-20, 10, 1), (-10, 20, 1)]
    op.process(batch([5, -5], [1, 1]))  # 5: windows ending 30 still open; -5: all closed
    assert op.late_rows == 1 and op.take_late()[0].column("ts").to_pylist() == [-5]
    assert sorted(counts(op.finish())) == [(0, 30, 2)]


def test_hopping_pane_freed_when_the_last_window_holding_it_closes() -> None:
    op = hop_op()
    op.process(batch([0, 15], [1, 1]))
    assert op.open_windows == 2  # panes [0, 10) and [10, 20)
    op.on_watermark(29)
    assert op.open_windows == 2
    op.on_watermark(30)  # window [0, 30) closed: pane [0, 10) is in no open window
    assert op.open_windows == 1


def test_hopping_far_apart_rows_emit_only_windows_that_hold_data() -> None:
    spec = WindowSpec("hopping", size_ms=1000, slide_ms=1)
    op = WindowAggregate(["key"], "ts", spec, aggs("count"), SCHEMA)
    out = drive(op, [batch([0, 10_000_000], [1, 1]), 5_000_000])
    assert len(rows(out)) == 2000


def test_hopping_update_mode_retracts_each_window_a_row_changes() -> None:
    op = hop_op(emit="update")
    op.process(batch([12], [1], [5]))
    changes = rows(op.process(batch([14], [1], [7])))
    assert [(r["window_start"], r["sum_value"], r["_change"]) for r in changes] == [
        (-10, 5, -1),
        (-10, 12, 1),
        (0, 5, -1),
        (0, 12, 1),
        (10, 5, -1),
        (10, 12, 1),
    ]


@pytest.mark.parametrize("emit", ["close", "update"])
@pytest.mark.parametrize("cut", [1, 4, 7])
def test_hopping_snapshot_restore_mid_stream_gives_identical_output(emit: str, cut: int) -> None:
    steps = [
        batch([0, 12, 25], [1, 1, 2], [1, 2, 3]),
        batch([31, 5, 44], [1, 2, 2], [4, 5, 6]),
        20,
        batch([33, 8, 60], [1, 2, 1], [7, 8, 9]),
        45,
        batch([52, 48, 75, 3], [1, 1, 2, 1]),
        90,
        batch([91], [3]),
    ]

    def make() -> WindowAggregate:
        return WindowAggregate(
            ["key"],
            "ts",
            HOP,
            aggs("count", "min_by(value, ts)", "avg(value)"),
            SCHEMA,
            emit=emit,
            allowed_lateness_ms=4,
            keep_late=True,
        )

    whole = make()
    expected = drive(whole, steps)
    assert whole.late_rows > 0
    assert rows(resumed(make, steps, cut)) == rows(expected)
    if emit == "update":
        close = drive(
            WindowAggregate(
                ["key"],
                "ts",
                HOP,
                aggs("count", "min_by(value, ts)", "avg(value)"),
                SCHEMA,
                allowed_lateness_ms=4,
            ),
            steps,
        )
        assert consolidate(expected) == rows(close)
