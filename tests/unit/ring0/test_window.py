"""Window aggregation: tumbling windows and what every window kind shares (config, schema,
lateness, update mode, snapshot/restore). Helpers here are used by the other window tests."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from connectors.generator import generate
from engine.errors import ConfigError, StateError
from ring0.operators.aggregate_spec import parse_aggregate
from ring0.operators.window import WindowAggregate, WindowSpec

SCHEMA = pa.schema([("ts", pa.int64()), ("key", pa.int64()), ("value", pa.int64())])
TUMBLING = WindowSpec("tumbling", size_ms=10)


def aggs(*texts: str) -> list:
    return [parse_aggregate(t) for t in texts]


def batch(
    ts: Sequence[int | None],
    key: Sequence,
    value: Sequence | None = None,
    schema: pa.Schema = SCHEMA,
) -> pa.RecordBatch:
    value = list(value) if value is not None else [1] * len(ts)
    return pa.record_batch({"ts": list(ts), "key": list(key), "value": value}, schema=schema)


Step = pa.RecordBatch | int  # a batch to process, or a watermark


def drive(op: WindowAggregate, steps: Sequence[Step], finish: bool = True) -> list[pa.RecordBatch]:
    out: list[pa.RecordBatch] = []
    for step in steps:
        out += op.on_watermark(step) if isinstance(step, int) else op.process(step)
    if finish:
        out += op.finish()
    for b in out:
        assert b.schema.equals(op.output_schema)
    return out


def rows(batches: Sequence[pa.RecordBatch], schema: pa.Schema | None = None) -> list[dict]:
    """Output rows, sorted (row order within a window is not guaranteed)."""
    if not batches:
        return []
    table = pa.Table.from_batches(batches, schema=schema)
    return sorted(table.to_pylist(), key=lambda r: tuple(str(v) for v in r.values()))


def consolidate(batches: Sequence[pa.RecordBatch]) -> list[dict]:
    """Apply a changelog: the rows whose ``_change``-weighted multiplicity is 1 (must be 0 or 1)."""
    net: Counter = Counter()
    for r in rows(batches):
        change = r.pop("_change")
        net[tuple(r.items())] += change
    assert set(net.values()) <= {0, 1}, net
    return sorted((dict(k) for k, v in net.items() if v), key=lambda r: tuple(map(str, r.values())))


def ipc_round_trip(state: dict[str, pa.Table]) -> dict[str, pa.Table]:
    out = {}
    for name, table in state.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        out[name] = pa.ipc.open_file(sink.getvalue()).read_all()
    return out


def resumed(make, steps: Sequence[Step], cut: int) -> list[pa.RecordBatch]:  # type: ignore[no-untyped-def]
    """Run ``steps[:cut]``, snapshot, restore into a fresh instance (through Arrow IPC files),
    run the rest; the output of both instances together."""
    first = make()
    out = drive(first, steps[:cut], finish=False)
    state = ipc_round_trip(first.snapshot())
    second = make()
    second.restore(state)
    late = second.late_rows
    out += drive(second, steps[cut:])
    assert second.late_rows >= late
    return out


def test_tumbling_row_at_window_end_belongs_to_next_window_and_negative_times_floor() -> None:
    op = WindowAggregate(["key"], "ts", TUMBLING, aggs("count"), SCHEMA)
    out = rows(drive(op, [batch([9, 10, -1, -10, -11, 0], [0] * 6)]))
    assert [(r["window_start"], r["window_end"], r["count"]) for r in out] == [
        (-10, 0, 2),
        (-20, -10, 1),
        (0, 10, 2),
        (10, 20, 1),
    ]


def test_tumbling_late_rows_dropped_counted_and_returned_when_kept() -> None:
    op = WindowAggregate(
        ["key"], "ts", TUMBLING, aggs("count", "sum(value)"), SCHEMA, keep_late=True
    )
    closed = drive(op, [batch([1, 2, 15], [1, 1, 1], [1, 2, 3]), 10], finish=False)
    assert rows(closed) == [
        {"window_start": 0, "window_end": 10, "key": 1, "count": 2, "sum_value": 3}
    ]
    assert drive(op, [batch([5, 16, 9], [1, 1, 2], [9, 4, 7])], finish=False) == []
    assert op.late_rows == 2
    (late,) = op.take_late()
    assert late.schema.equals(SCHEMA) and late.column("ts").to_pylist() == [5, 9]
    assert op.take_late() == []
    assert rows(op.finish()) == [
        {"window_start": 10, "window_end": 20, "key": 1, "count": 2, "sum_value": 7}
    ]


def test_tumbling_allowed_lateness_keeps_window_open_past_its_end() -> None:
    op = WindowAggregate(["key"], "ts", TUMBLING, aggs("count"), SCHEMA, allowed_lateness_ms=5)
    assert drive(op, [batch([1], [1]), 14], finish=False) == []  # 10 + 5 > 14: still open
    assert drive(op, [batch([2], [1])], finish=False) == []
    assert op.late_rows == 0
    assert [r["count"] for r in rows(op.on_watermark(15))] == [2]
    drive(op, [batch([3], [1])])
    assert op.late_rows == 1


def test_window_rows_without_event_time_dropped_and_counted() -> None:
    op = WindowAggregate(["key"], "ts", TUMBLING, aggs("count"), SCHEMA)
    out = rows(drive(op, [batch([1, None, 3], [0, 0, 0])]))
    assert op.null_time_rows == 1 and [r["count"] for r in out] == [2]


def test_window_close_emits_windows_in_ascending_end_order() -> None:
    op = WindowAggregate(["key"], "ts", TUMBLING, aggs("count"), SCHEMA)
    out = drive(op, [batch([45, 3, 27, 11, 38, 3], [1, 2, 3, 1, 2, 3]), 40])
    ends = pa.Table.from_batches(out).column("window_end").to_pylist()
    assert ends == sorted(ends) and ends[-1] == 50 and len(ends) == 6


def test_window_global_key_aggregates_every_row_of_a_window() -> None:
    op = WindowAggregate([], "ts", TUMBLING, aggs("count", "max(value)"), SCHEMA)
    out = drive(op, [batch([1, 2, 3, 12], [1, 2, 3, 4], [5, 9, 2, 1])])
    assert op.output_schema.names == ["window_start", "window_end", "count", "max_value"]
    assert rows(out) == [
        {"window_start": 0, "window_end": 10, "count": 3, "max_value": 9},
        {"window_start": 10, "window_end": 20, "count": 1, "max_value": 1},
    ]


@pytest.mark.parametrize(
    ("unit", "factor"), [("s", 0.001), ("ms", 1), ("us", 1000), ("ns", 1_000_000)]
)
def test_window_timestamp_time_column_converted_to_ms_output_timestamp_ms(
    unit: str, factor: float
) -> None:
    ts_type = pa.timestamp(unit, "UTC")
    schema = pa.schema([("ts", ts_type), ("key", pa.string()), ("value", pa.int64())])
    ms = np.array([-1500, 999, 1000, 2500, 3000] if unit != "s" else [-2000, 0, 1000, 2000, 3000])
    raw = (ms * factor).astype(np.int64)
    b = pa.record_batch(
        [pa.array(raw).cast(ts_type), pa.array(["a"] * 5), pa.array([1] * 5)], schema=schema
    )
    op = WindowAggregate(["key"], "ts", WindowSpec("tumbling", size_ms=1000), aggs("count"), schema)
    assert op.output_schema.field("window_start").type == pa.timestamp("ms", "UTC")
    out = pa.Table.from_batches(drive(op, [b]))
    starts = pc.cast(out.column("window_start"), pa.int64()).to_pylist()
    expected = Counter(int(np.floor(m / 1000)) * 1000 for m in ms)
    assert dict(zip(starts, out.column("count").to_pylist(), strict=True)) == expected


def test_window_string_and_multi_column_keys_group_separately() -> None:
    schema = pa.schema(
        [("ts", pa.int64()), ("a", pa.string()), ("b", pa.int32()), ("value", pa.int64())]
    )
    b = pa.record_batch(
        {"ts": [1, 2, 3, 4], "a": ["x", "x", "y", None], "b": [1, 2, 1, 1], "value": [1, 2, 3, 4]},
        schema=schema,
    )
    op = WindowAggregate(["a", "b"], "ts", TUMBLING, aggs("sum(value)"), schema)
    out = rows(drive(op, [b]))
    assert [(r["a"], r["b"], r["sum_value"]) for r in out] == [
        (None, 1, 4),
        ("x", 1, 1),
        ("x", 2, 2),
        ("y", 1, 3),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": ["nope"]}, "column 'nope' is not in the input"),
        ({"key": ["tags"]}, "key column 'tags' has type list<item: string>"),
        ({"time": "nope"}, "column 'nope' is not in the input"),
        ({"time": "name"}, "event-time column 'name' must be an integer"),
        ({"aggregates": []}, "at least one aggregate"),
        ({"aggregates": aggs("sum(name)")}, "sum needs an integer, floating-point or decimal"),
        ({"aggregates": aggs("max(missing)")}, "column 'missing' is not in the input"),
        ({"aggregates": aggs("count", "count")}, r"output column names \['count'\] occur twice"),
        ({"aggregates": aggs("max(key) as key")}, "occur twice"),
        ({"emit": "always"}, "emit='always' must be 'close' or 'update'"),
        ({"allowed_lateness_ms": -1}, "allowed_lateness_ms=-1 must be >= 0"),
        ({"window": WindowSpec("input")}, "column 'window_start' is not in the input"),
    ],
)
def test_window_bad_configuration_rejected_at_construction(kwargs: dict, message: str) -> None:
    schema = pa.schema(
        [("ts", pa.int64()), ("key", pa.int64()), ("value_f", pa.float64()), ("name", pa.string()),
         ("tags", pa.list_(pa.string()))]
    )  # fmt: skip
    args = {
        "key": ["key"],
        "time": "ts",
        "window": TUMBLING,
        "aggregates": aggs("count"),
        "input_schema": schema,
        **kwargs,
    }
    with pytest.raises(ConfigError, match=message):
        WindowAggregate(**args)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "sliding", "size_ms": 5}, "window type 'sliding' is not one of"),
        ({"type": "tumbling"}, "tumbling window size_ms=0 must be > 0"),
        ({"type": "hopping", "size_ms": 10, "slide_ms": 3}, "must be a multiple of slide_ms=3"),
        ({"type": "hopping", "size_ms": 10}, "slide_ms=0"),
        ({"type": "session", "gap_ms": 0}, "session window gap_ms=0 must be > 0"),
    ],
)
def test_window_spec_bad_values_raise_config_error(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WindowSpec(**spec)


def test_window_output_schema_bounds_keys_aggregates_then_change() -> None:
    op = WindowAggregate(
        ["key"], "ts", TUMBLING, aggs("count", "avg(value) as a"), SCHEMA, emit="update"
    )
    assert op.output_schema == pa.schema(
        [
            ("window_start", pa.int64()),
            ("window_end", pa.int64()),
            ("key", pa.int64()),
            ("count", pa.int64()),
            ("a", pa.float64()),
            ("_change", pa.int8()),
        ]
    )


def test_tumbling_update_mode_retracts_previous_values_and_adds_up_to_final() -> None:
    op = WindowAggregate(
        ["key"], "ts", TUMBLING, aggs("count", "sum(value)"), SCHEMA, emit="update"
    )
    first = rows(op.process(batch([1, 2, 11], [1, 1, 1], [1, 2, 3])))
    assert [(r["window_start"], r["count"], r["_change"]) for r in first] == [(0, 2, 1), (10, 1, 1)]
    second = rows(op.process(batch([3, 4], [1, 2], [10, 20])))
    assert second == [
        {"window_start": 0, "window_end": 10, "key": 1, "count": 2, "sum_value": 3, "_change": -1},
        {"window_start": 0, "window_end": 10, "key": 1, "count": 3, "sum_value": 13, "_change": 1},
        {"window_start": 0, "window_end": 10, "key": 2, "count": 1, "sum_value": 20, "_change": 1},
    ]
    assert op.on_watermark(20) == [] and op.open_windows == 0 and op.finish() == []
    counts: Counter = Counter()
    for r in first + second:
        counts[(r["window_start"], r["key"])] += r["_change"] * r["count"]
    assert counts == {(0, 1): 3, (0, 2): 1, (10, 1): 1}


def _steps(seed: int, n_batches: int = 8, n: int = 60) -> list[Step]:
    rng = np.random.default_rng(seed)
    steps: list[Step] = []
    wm = -50
    for _ in range(n_batches):
        ts = rng.integers(wm - 20, wm + 60, n)
        steps.append(
            batch(ts.tolist(), rng.integers(0, 4, n).tolist(), rng.integers(-9, 9, n).tolist())
        )
        wm += int(rng.integers(0, 25))
        steps.append(wm)
    return steps


@pytest.mark.parametrize("emit", ["close", "update"])
@pytest.mark.parametrize("cut", [1, 6, 11])
def test_tumbling_snapshot_restore_mid_stream_gives_identical_output(emit: str, cut: int) -> None:
    def make() -> WindowAggregate:
        return WindowAggregate(
            ["key"],
            "ts",
            TUMBLING,
            aggs(
                "count", "sum(value)", "max_by(key, value)", "avg(value)", "count_distinct(value)"
            ),
            SCHEMA,
            emit=emit,
            allowed_lateness_ms=3,
            keep_late=True,
        )

    steps = _steps(7)
    whole = make()
    expected = drive(whole, steps)
    assert rows(resumed(make, steps, cut)) == rows(expected)
    assert whole.late_rows > 0


def test_window_restore_of_foreign_state_raises_state_error() -> None:
    tumbling = WindowAggregate(["key"], "ts", TUMBLING, aggs("count"), SCHEMA)
    session = WindowAggregate(["key"], "ts", WindowSpec("session", gap_ms=5), aggs("count"), SCHEMA)
    with pytest.raises(StateError, match="expected"):
        session.restore(tumbling.snapshot())
    other = WindowAggregate(["key"], "ts", TUMBLING, aggs("sum(value)"), SCHEMA)
    with pytest.raises(StateError, match="schema"):
        other.restore(tumbling.snapshot())


def test_tumbling_batch_spanning_a_million_empty_windows_visits_only_present_ones() -> None:
    op = WindowAggregate(["key"], "ts", WindowSpec("tumbling", size_ms=1), aggs("count"), SCHEMA)
    op.process(batch([0, 5_000_000, 5_000_000, 2_000_000], [1, 1, 2, 1]))
    assert op.open_windows == 3
    out = rows(op.on_watermark(10_000_000))
    assert [(r["window_start"], r["count"]) for r in out] == [
        (0, 1),
        (2_000_000, 1),
        (5_000_000, 1),
        (5_000_000, 1),
    ]


def test_tumbling_64k_rows_10k_keys_costs_about_one_group_by() -> None:
    """Micro check, not a benchmark: processing a 64K-row batch (10K keys, count/sum/avg) costs
    about what the previous operator paid, i.e. one pyarrow group-by of the batch."""
    b = generate(1, 0, 65_536, 10_000, 1_000_000)
    schema = b.schema

    def ours() -> None:
        op = WindowAggregate(
            ["key"],
            "ts",
            WindowSpec("tumbling", size_ms=1000),
            aggs("count", "sum(value)", "avg(value)"),
            schema,
        )
        op.process(b)

    def floor() -> None:  # what the old operator did per batch
        ts = b.column("ts").to_numpy()
        t = pa.table({"w": ts - ts % 1000, "key": b.column("key"), "value": b.column("value")})
        t.group_by(["w", "key"], use_threads=False).aggregate([([], "count_all"), ("value", "sum")])

    def best(f) -> float:  # type: ignore[no-untyped-def]
        times = []
        for _ in range(7):
            start = time.perf_counter()
            f()
            times.append(time.perf_counter() - start)
        return min(times)

    ours_s, floor_s = best(ours), best(floor)
    print(f"64K rows, 10K keys: {ours_s * 1e3:.2f} ms (a bare group-by: {floor_s * 1e3:.2f} ms)")
    assert ours_s < 3 * floor_s + 0.002


def test_dictionary_encoded_keys_with_a_dictionary_per_batch_group_by_value() -> None:
    """Each batch may bring its own dictionary (Parquet read with read_dictionary does):
    keys group by value and come out decoded."""
    from ring0.operators.groupby import GroupByAggregate

    schema = pa.schema([("ts", pa.int64()), ("k", pa.dictionary(pa.int32(), pa.string())),
                        ("v", pa.float64())])  # fmt: skip
    aggs = [parse_aggregate("count"), parse_aggregate("sum(v)")]

    def batch(ts: list[int], keys: list[str]) -> pa.RecordBatch:
        return pa.record_batch([pa.array(ts), pa.array(keys).dictionary_encode(),
                                pa.array([1.0] * len(ts))], schema=schema)  # fmt: skip

    for op in (WindowAggregate(["k"], "ts", WindowSpec("tumbling", size_ms=1000), aggs, schema),
               GroupByAggregate(["k"], aggs, schema, emit="close")):  # fmt: skip
        out = op.process(batch([1, 2, 3], ["a", "b", "a"])) + op.process(batch([4, 5], ["b", "c"]))
        got = pa.Table.from_batches(out + op.finish(), schema=op.output_schema)
        assert op.output_schema.field("k").type == pa.string()
        assert sorted(zip(got["k"].to_pylist(), got["count"].to_pylist(), strict=True)) == [
            ("a", 2), ("b", 2), ("c", 1)]  # fmt: skip
