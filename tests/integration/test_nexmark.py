"""Nexmark q0-q8 through ``python -m engine run``, checked row for row against DuckDB.

Each test runs an example pipeline (``examples/nexmark/qN.toml``) as a user would, in a
subprocess from the repository root, with 1 or 2 Ring 0 workers, small sizes set through
``RINGSTREAM_*`` variables, checkpoints every 100 ms (so barriers cross windows and join
state), and reads the sink's committed files. The result must equal
``tests.nexmark_reference.reference`` over the very rows the sources emit
(``generate_tables`` with the same options): same rows, same multiplicity, no late rows.

200 000 model events at 2 000 events/s span 100 s of event time: ~54 windows for q5
(10 s sliding by 2 s), 10 for q7 and q8's same-window condition. At that rate an auction
lasts up to ~28 min of event time, so q4 and q6 close most auctions only at the end of the
input: the join's per-auction bound (``left_until``) must hold them that long.

q4's output is a changelog (``_change``); ``canonical`` folds it into the table it
describes before comparing.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from connectors.files.sink import read_committed
from tests.nexmark_reference import canonical, generate_tables, reference

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 200_000
EVENTS_PER_SECOND = 2_000
SEED = 1  # the examples' seed
WORKERS = {1: "[1]", 2: "[0, 1]"}
QUERIES = ["q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8"]
TWO_SOURCES = {"q3", "q4", "q6", "q8"}
CHANGELOG = {"q4"}  # the summary counts changelog rows, not the rows of the result
_DONE = re.compile(r"done: ([\d,]+) events in [\d.]+ s .*?; ([\d,]+) output rows")


@functools.cache
def _expected(query: str, events: int, events_per_second: int) -> pa.Table:
    return reference(query, _tables(events, events_per_second))


@functools.cache
def _tables(events: int, events_per_second: int) -> dict[str, pa.Table]:
    return generate_tables(events, SEED, events_per_second)


def run_query(
    query: str,
    workers: int,
    tmp: Path,
    extra_env: dict[str, str] | None = None,
    pipeline: Path | None = None,
) -> tuple[pa.Table, str]:
    """Run ``examples/nexmark/<query>.toml``; (its committed output, canonical; the summary).

    Sources get ``EVENTS`` and ``EVENTS_PER_SECOND`` unless ``pipeline`` (a file to run
    instead) is given: that one sets its own sizes.
    """
    topology = tmp / "topology.toml"
    topology.write_text(
        "[topology]\ncoordinator = 0\nconnectors = [0]\n"
        f"workers = {WORKERS[workers]}\n[rings]\ncapacity = 4194304\n"
    )
    out = tmp / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGSTREAM_")}
    sources = 0 if pipeline else 2 if query in TWO_SOURCES else 1  # a given pipeline sets its own
    for i in range(sources):
        env[f"RINGSTREAM_SOURCES__{i}__EVENTS"] = str(EVENTS)
        env[f"RINGSTREAM_SOURCES__{i}__EVENTS_PER_SECOND"] = str(EVENTS_PER_SECOND)
    env["RINGSTREAM_SINKS__0__PATH"] = str(out)
    env["RINGSTREAM_CHECKPOINT__DIR"] = str(tmp / "ckpt")
    env["RINGSTREAM_CHECKPOINT__INTERVAL_MS"] = "100"
    env.update(extra_env or {})
    done = subprocess.run(
        [sys.executable, "-m", "engine", "run", str(pipeline or f"examples/nexmark/{query}.toml"),
         "--topology", str(topology), "--oversubscribe", "--quiet"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{query} failed:\n{done.stdout}\n{done.stderr}"
    return canonical(query, read_committed(out)), done.stdout


def assert_same_rows(query: str, got: pa.Table, expected: pa.Table) -> None:
    """Equal canonical tables; float columns within 1e-12 relative (exact elsewhere)."""
    assert got.num_rows == expected.num_rows, (
        f"{query}: {got.num_rows} rows, the reference has {expected.num_rows}"
    )
    for name in expected.column_names:
        a, b = got.column(name), expected.column(name)
        if pa.types.is_floating(b.type):
            assert a.null_count == b.null_count == 0
            ok = np.allclose(a.to_numpy(), b.to_numpy(), rtol=1e-12, atol=0.0)
        else:
            ok = a.equals(b)
        if not ok:
            bad = np.flatnonzero(~np.asarray(pc.equal(a, b).fill_null(False)))
            first = int(bad[0]) if bad.size else 0
            raise AssertionError(
                f"{query}: column {name!r} differs at {bad.size} row(s); first at row {first}: "
                f"got {got.slice(first, 1).to_pylist()}, "
                f"reference {expected.slice(first, 1).to_pylist()}"
            )


def _check_summary(query: str, summary: str, expected_rows: int) -> None:
    m = _DONE.search(summary)
    assert m, f"{query}: no summary line in {summary!r}"
    if query in CHANGELOG:  # every change of the result is a row: at least one per result row
        assert int(m.group(2).replace(",", "")) > expected_rows, summary
    else:
        assert int(m.group(2).replace(",", "")) == expected_rows, summary
    assert "late rows" not in summary, f"{query}: rows were late: {summary}"
    assert "recovered" not in summary, f"{query}: the run restarted: {summary}"


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("query", QUERIES)
def test_nexmark_query_through_engine_equals_duckdb_reference(
    query: str, workers: int, tmp_path: Path
) -> None:
    got, summary = run_query(query, workers, tmp_path)
    expected = _expected(query, EVENTS, EVENTS_PER_SECOND)
    assert expected.num_rows > 0, f"{query}: the reference is empty; the test would prove little"
    _check_summary(query, summary, expected.num_rows)
    assert_same_rows(query, got, expected)


def test_nexmark_q5_two_source_instances_interleaved_event_time_equals_reference(
    tmp_path: Path,
) -> None:
    # Instance j of 2 reads chunks j, j + 2, ...: the workers see two event-time streams
    # interleaved and must hold windows open until the slower one's watermark passes.
    got, summary = run_query("q5", 2, tmp_path, {"RINGSTREAM_SOURCES__0__PARALLELISM": "2"})
    expected = _expected("q5", EVENTS, EVENTS_PER_SECOND)
    _check_summary("q5", summary, expected.num_rows)
    assert_same_rows("q5", got, expected)


def jittered_copy(query: str, jitter_ms: int, dest: Path) -> Path:
    """The example pipeline with its source's event times up to ``jitter_ms`` out of order.

    The generator's ``max_out_of_orderness_ms`` shares its name with the runtime key (the
    watermark lag), so the connector's options go in an explicit ``options`` table and the
    runtime key, set to the same bound, stays beside it.
    """
    text = (ROOT / "examples" / "nexmark" / f"{query}.toml").read_text()
    head, source, rest = re.split(r"^(?=\[\[sources\]\]|\[\[?query)", text, maxsplit=2, flags=re.M)
    options = {"events": EVENTS, "events_per_second": EVENTS_PER_SECOND}
    kept = []
    for line in source.splitlines():
        m = re.match(r"^(kind|columns|events|events_per_second|seed)\s*=\s*([^#]+?)\s*(#.*)?$",
                     line)  # fmt: skip
        if m:
            options.setdefault(m.group(1), m.group(2))  # type: ignore[arg-type]
        elif line.strip():
            kept.append(line)
    options["max_out_of_orderness_ms"] = jitter_ms
    inline = ", ".join(f"{k} = {v}" for k, v in options.items())
    kept += [f"max_out_of_orderness_ms = {jitter_ms}", f"options = {{ {inline} }}", ""]
    dest.write_text(head + "\n".join(kept) + "\n" + rest)
    return dest


@pytest.mark.parametrize("query", ["q5", "q7"])
def test_nexmark_out_of_order_event_times_within_watermark_lag_equal_reference(
    query: str, tmp_path: Path
) -> None:
    # Every row is at most 700 ms behind the largest event time before it, and the watermark
    # lags by 700 ms: nothing is late, windows close only once complete.
    pipeline = jittered_copy(query, 700, tmp_path / f"{query}-jitter.toml")
    got, summary = run_query(query, 2, tmp_path, pipeline=pipeline)
    tables = generate_tables(EVENTS, SEED, EVENTS_PER_SECOND, max_out_of_orderness_ms=700)
    ordered = _tables(EVENTS, EVENTS_PER_SECOND)["bid"].column("date_time")
    assert not tables["bid"].column("date_time").equals(ordered), "the jitter changed nothing"
    expected = reference(query, tables)
    _check_summary(query, summary, expected.num_rows)
    assert_same_rows(query, got, expected)
