"""Property tests: random out-of-order input, random batches, random (never regressing)
watermarks and lateness; every window kind against a DuckDB batch computation over the rows
that were not late, in close mode, in update mode (the changelog applied) and resumed from a
snapshot taken at a random point."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from ring0.operators.window import WindowAggregate, WindowSpec
from tests.unit.ring0.test_window import aggs, consolidate, drive, resumed, rows

SCHEMA = pa.schema([("ts", pa.int64()), ("key", pa.int64()), ("v", pa.int64()), ("w", pa.int64())])
AGGS = aggs("count", "sum(v)", "min(v)", "max(v)", "avg(v)", "count_distinct(v)", "max_by(v, w)")
SELECT = """count(*) as "count", sum(v)::bigint as sum_v, min(v) as min_v, max(v) as max_v,
    avg(v) as avg_v, count(distinct v) as count_distinct_v,
    min(v) filter (where w = best) as max_by_v"""

Case = tuple[pa.Table, list, np.ndarray]  # rows (with arrival batch "at"), steps, wm per batch


def make_case(seed: int, n_batches: int, disorder: int, jumpy: bool) -> Case:
    rng = np.random.default_rng(seed)
    steps: list = []
    tables, wm_before = [], []
    wm, seen, clock = None, -(2**62), int(rng.integers(-300, 0))
    for i in range(n_batches):
        n = int(rng.integers(0, 40))
        clock += int(rng.integers(0, 60))
        ts = clock + rng.integers(-disorder, disorder + 1, n)
        t = pa.table(
            {
                "ts": ts,
                "key": rng.integers(0, 4, n),
                "v": rng.integers(-20, 20, n),
                "w": rng.integers(0, 3, n),
            },
            schema=SCHEMA,
        )
        steps.append(t.to_batches()[0] if n else pa.RecordBatch.from_pylist([], schema=SCHEMA))
        tables.append(t.append_column("at", pa.array(np.full(n, i, dtype=np.int64))))
        wm_before.append(-(2**62) if wm is None else wm)
        seen = max(seen, int(ts.max()) if n else seen)
        if rng.random() < 0.8 and seen > -(2**62):
            lag = int(rng.integers(-30, disorder + 1)) if jumpy else int(rng.integers(0, 40))
            wm = max(wm if wm is not None else -(2**62), seen - lag)
            steps.append(wm)
    return pa.concat_tables(tables), steps, np.array(wm_before, dtype=np.int64)


def reference(query: str, table: pa.Table) -> list[dict]:
    con = duckdb.connect()
    con.register("rows", table)
    return rows(con.sql(query).to_arrow_table().to_batches())


def check(make, steps: list, expected: list[dict], expected_late: pa.Table, cut: int) -> None:  # type: ignore[no-untyped-def]
    op = make("close")
    got = rows(drive(op, steps))
    assert _rounded(got) == _rounded(expected)
    late = op.take_late()
    assert op.late_rows == expected_late.num_rows
    assert sorted(
        pa.Table.from_batches(late, SCHEMA).to_pylist() if late else [], key=str
    ) == sorted(expected_late.select(SCHEMA.names).to_pylist(), key=str)
    assert consolidate(drive(make("update"), steps)) == got
    assert rows(resumed(lambda: make("close"), steps, cut)) == got
    assert consolidate(resumed(lambda: make("update"), steps, cut)) == got


def _rounded(out: list[dict]) -> list[dict]:
    return [{**r, "avg_v": round(r["avg_v"], 9)} for r in out]


cases = st.builds(
    make_case,
    seed=st.integers(0, 2**32 - 1),
    n_batches=st.integers(1, 10),
    disorder=st.integers(0, 80),
    jumpy=st.booleans(),
)


@settings(max_examples=40, deadline=None)
@given(
    case=cases,
    size=st.sampled_from([1, 10, 25, 100]),
    lateness=st.sampled_from([0, 7, 50]),
    cut=st.integers(0, 20),
)
def test_tumbling_random_batches_and_watermarks_match_duckdb(
    case: Case, size: int, lateness: int, cut: int
) -> None:
    table, steps, wm_before = case
    ts = table.column("ts").to_numpy()
    start = ts - ts % size
    late = start + size + lateness <= wm_before[table.column("at").to_numpy()]
    kept = table.filter(pa.array(~late)).append_column("ws", pa.array(start[~late]))
    expected = reference(
        f"""with m as (select *, max(w) over (partition by ws, key) as best from rows)
        select ws as window_start, ws + {size} as window_end, key, {SELECT}
        from m group by ws, key""",
        kept,
    )

    def make(emit: str) -> WindowAggregate:
        return WindowAggregate(
            ["key"],
            "ts",
            WindowSpec("tumbling", size_ms=size),
            AGGS,
            SCHEMA,
            emit=emit,
            allowed_lateness_ms=lateness,
            keep_late=True,
        )

    check(make, steps, expected, table.filter(pa.array(late)), min(cut, len(steps)))


@settings(max_examples=40, deadline=None)
@given(
    case=cases,
    slide=st.sampled_from([1, 5, 20]),
    panes=st.integers(1, 4),
    lateness=st.sampled_from([0, 7]),
    cut=st.integers(0, 20),
)
def test_hopping_random_batches_and_watermarks_match_duckdb(
    case: Case, slide: int, panes: int, lateness: int, cut: int
) -> None:
    """A row counts in each of its windows that had not closed when it arrived."""
    table, steps, wm_before = case
    size = slide * panes
    ts = table.column("ts").to_numpy()
    wm = wm_before[table.column("at").to_numpy()]
    pane = ts - ts % slide
    late = pane + size + lateness <= wm
    copies = []
    for j in range(panes):
        ws = pane - j * slide
        open_ = ws + size + lateness > wm
        copies.append(table.filter(pa.array(open_)).append_column("ws", pa.array(ws[open_])))
    expected = reference(
        f"""with m as (select *, max(w) over (partition by ws, key) as best from rows)
        select ws as window_start, ws + {size} as window_end, key, {SELECT}
        from m group by ws, key""",
        pa.concat_tables(copies),
    )

    def make(emit: str) -> WindowAggregate:
        spec = WindowSpec("hopping", size_ms=size, slide_ms=slide)
        return WindowAggregate(
            ["key"],
            "ts",
            spec,
            AGGS,
            SCHEMA,
            emit=emit,
            allowed_lateness_ms=lateness,
            keep_late=True,
        )

    check(make, steps, expected, table.filter(pa.array(late)), min(cut, len(steps)))


@settings(max_examples=40, deadline=None)
@given(
    case=cases,
    gap=st.sampled_from([1, 6, 30]),
    lateness=st.sampled_from([0, 7]),
    cut=st.integers(0, 20),
)
def test_session_random_batches_and_watermarks_match_duckdb(
    case: Case, gap: int, lateness: int, cut: int
) -> None:
    """Late: ts + gap + lateness <= watermark, or within gap of a session already emitted."""
    table, steps, wm_before = case

    def make(emit: str) -> WindowAggregate:
        return WindowAggregate(
            ["key"],
            "ts",
            WindowSpec("session", gap_ms=gap),
            AGGS,
            SCHEMA,
            emit=emit,
            allowed_lateness_ms=lateness,
            keep_late=True,
        )

    # Sessions emitted before each batch arrived, from the operator itself (their contents
    # are checked against the reference below).
    op, emitted, batches_seen = make("close"), [], 0
    for step in steps:
        if isinstance(step, int):
            for b in op.on_watermark(step):
                emitted += [
                    (r["key"], r["window_start"], r["window_end"], batches_seen)
                    for r in b.to_pylist()
                ]
        else:
            op.process(step)
            batches_seen += 1
    ts, key = table.column("ts").to_numpy(), table.column("key").to_numpy()
    at = table.column("at").to_numpy()
    late = ts + gap + lateness <= wm_before[at]
    for k, start, end, when in emitted:
        late |= (key == k) & (at >= when) & (ts >= start - gap) & (ts <= end)
    expected = reference(
        f"""with o as (select *, max(ts) over (partition by key order by ts
                range between unbounded preceding and 1 preceding) as prev from rows),
        s as (select *, sum(case when prev is null or ts - prev > {gap} then 1 else 0 end)
              over (partition by key order by ts) as sid from o),
        m as (select *, max(w) over (partition by key, sid) as best from s)
        select min(ts) as window_start, max(ts) + {gap} as window_end, key, {SELECT}
        from m group by key, sid""",
        table.filter(pa.array(~late)),
    )
    check(make, steps, expected, table.filter(pa.array(late)), min(cut, len(steps)))
