"""Every key on every core: the same pipelines with 1, 2 and 4 workers, each against DuckDB.

Keys of every kind users group and join by — strings (Zipf-skewed, some null),
several columns together (string, boolean, date, decimal, binary), timestamps,
and keys computed by a ``project`` step the sources run — through windows,
``group_by`` and both joins, with aggregates over expressions. Results must be
equal across worker counts (floats to ``tests.tables.FLOAT_RTOL``) and equal to
DuckDB computing the same query over the same Parquet files.
"""

from __future__ import annotations

import decimal
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.files.committed import read_committed
from tests.engine_run import ROOT
from tests.tables import assert_tables_match

ROWS = 20_000
T0 = 1_700_000_000_000  # ms


def trades(rng: np.random.Generator, rows: int = ROWS) -> pa.Table:
    users = np.minimum(rng.zipf(1.3, rows), 500) - 1
    user = pa.array([f"user-{u:06d}" for u in users.tolist()])
    user = pa.array(user.to_pylist(), mask=rng.random(rows) < 0.01)  # 1% null users
    qty = rng.integers(1, 50, rows)
    amt = [decimal.Decimal(int(v)) / 4 for v in rng.integers(0, 12, rows)]
    ts = T0 + np.sort(rng.integers(0, 30_000, rows))  # 30 s, in order
    return pa.table({
        "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("ms")),
        "user": user,
        "side": pa.array(np.where(rng.random(rows) < 0.5, "buy", "sell")),
        "price": rng.random(rows) * 100,
        "qty": pa.array(qty, pa.int64()),
        "flag": pa.array(rng.random(rows) < 0.3),
        "day": pa.array((ts // 86_400_000 + rng.integers(0, 3, rows)).astype("int32"),
                        pa.int32()).cast(pa.date32()),
        "amt": pa.array(amt, pa.decimal128(12, 2)),
        "blob": pa.array([u.to_bytes(2, "little") for u in (users % 37).tolist()], pa.binary()),
    })  # fmt: skip


def write_input(tmp_path: Path, name: str, table: pa.Table, files: int = 3) -> Path:
    d = tmp_path / name
    d.mkdir()
    step = -(-table.num_rows // files)
    for i in range(files):  # several files: several batches, several reads
        pq.write_table(table.slice(i * step, step), d / f"part-{i}.parquet")
    return d


SOURCE = """
[[sources]]
name = "{name}"
type = "files"
path = "{path}"
format = "parquet"
event_time = "ts"
"""


def run(tmp_path: Path, body: str, workers: int, tag: str) -> pa.Table:
    out = tmp_path / f"out-{tag}-{workers}"
    p = tmp_path / f"{tag}-{workers}.toml"
    p.write_text(f"""
[pipeline]
name = "{tag}"
[checkpoint]
dir = "{out}.checkpoints"
interval_ms = 500
[metrics]
enabled = false
{body}
[[sinks]]
name = "out"
type = "files"
path = "{out}"
format = "parquet"
""")
    done = subprocess.run(
        [sys.executable, "-m", "engine", "run", str(p), "--workers", str(workers),
         "--oversubscribe"],
        capture_output=True, text=True, cwd=ROOT, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return read_committed(out)


def ordered(table: pa.Table) -> pa.Table:
    return table.sort_by([(c, "ascending") for c in table.column_names])


def check(tmp_path: Path, tag: str, body: str, sql: str, tables: dict[str, pa.Table]) -> None:
    con = duckdb.connect()
    for name, t in tables.items():
        con.register(name, t)
    results = [ordered(run(tmp_path, body, w, tag)) for w in (1, 2, 4)]
    assert results[0].num_rows > 0
    for other in results[1:]:
        assert_tables_match(other, results[0])
    want = ordered(con.sql(sql).to_arrow_table().cast(results[0].schema))
    assert_tables_match(results[0], want)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    tmp = tmp_path_factory.mktemp("keys")
    t = trades(np.random.default_rng(7))
    return write_input(tmp, "trades", t), t


def test_window_by_string_key_with_expression_aggregates(
    tmp_path: Path, data: tuple[Path, pa.Table]
) -> None:
    path, t = data
    body = SOURCE.format(name="trades", path=path) + """
[[query.steps]]
op = "window"
key = "user"
window = { type = "tumbling", size_ms = 1000 }
aggregates = ["count", "sum(price * qty) as notional", "count(distinct side) as sides",
              "avg(if(side = 'buy', qty, 0)) as buy_qty", "max(qty)"]
"""
    sql = """
SELECT time_bucket(INTERVAL 1 SECOND, ts) AS window_start,
       time_bucket(INTERVAL 1 SECOND, ts) + INTERVAL 1 SECOND AS window_end,
       "user", count(*) AS count, sum(price * qty) AS notional,
       count(DISTINCT side) AS sides, avg(CASE WHEN side = 'buy' THEN qty ELSE 0 END) AS buy_qty,
       max(qty) AS max_qty
FROM trades GROUP BY ALL"""
    check(tmp_path, "string-window", body, sql, {"trades": t})


def test_group_by_several_columns_binary_bool_date_decimal(
    tmp_path: Path, data: tuple[Path, pa.Table]
) -> None:
    path, t = data
    body = SOURCE.format(name="trades", path=path) + """
[[query.steps]]
op = "group_by"
key = ["blob", "flag", "day", "amt"]
emit = "close"
aggregates = ["count", "sum(qty)", "min(price)", "max(price)"]
"""
    sql = """
SELECT blob, flag, day, amt, count(*) AS count, sum(qty) AS sum_qty, min(price) AS min_price,
       max(price) AS max_price
FROM trades GROUP BY ALL"""
    check(tmp_path, "multi-groupby", body, sql, {"trades": t})


def test_computed_timestamp_and_string_keys_run_in_the_source(
    tmp_path: Path, data: tuple[Path, pa.Table]
) -> None:
    path, t = data
    body = SOURCE.format(name="trades", path=path) + """
[[query.steps]]
op = "filter"
where = "qty > 10"
[[query.steps]]
op = "project"
columns = ["ts", "substr(user, 1, 8) as prefix", "date_trunc('second', ts) as second",
           "price * qty as notional"]
[[query.steps]]
op = "window"
key = ["prefix", "second"]
window = { type = "tumbling", size_ms = 5000 }
aggregates = ["count", "sum(notional) as total"]
"""
    p = tmp_path / "v.toml"
    p.write_text(body + '[[sinks]]\nname = "o"\ntype = "console"\n')
    validate = subprocess.run(
        [sys.executable, "-m", "engine", "validate", str(p), "--workers", "2"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert validate.returncode == 0, validate.stderr
    assert "query.steps[0..1] in source 'trades'" in validate.stdout
    assert "query.steps[2..2] in the workers" in validate.stdout
    sql = """
SELECT time_bucket(INTERVAL 5 SECOND, ts) AS window_start,
       time_bucket(INTERVAL 5 SECOND, ts) + INTERVAL 5 SECOND AS window_end,
       substr("user", 1, 8) AS prefix, date_trunc('second', ts) AS second,
       count(*) AS count, sum(price * qty) AS total
FROM trades WHERE qty > 10 GROUP BY ALL"""
    check(tmp_path, "computed", body, sql, {"trades": t})


def two_sides(tmp_path: Path) -> tuple[Path, Path, pa.Table, pa.Table]:
    rng = np.random.default_rng(11)
    n = 6_000
    users = [f"u{u}" for u in (np.minimum(rng.zipf(1.5, n), 200)).tolist()]
    left = pa.table({
        "ts": pa.array(T0 + np.sort(rng.choice(40_000, n, replace=False)), pa.int64()),
        "user": users, "oid": np.arange(n),
    })  # fmt: skip
    right = pa.table({  # distinct times: no ties for ASOF to break
        "ts": pa.array(T0 + np.sort(rng.choice(40_000, n, replace=False)), pa.int64()),
        "user": [f"u{u}" for u in (np.minimum(rng.zipf(1.5, n), 200)).tolist()],
        "pay": rng.integers(1, 1000, n),
    })  # fmt: skip
    return write_input(tmp_path, "l", left), write_input(tmp_path, "r", right), left, right


def join_on_string_keys(tmp_path: Path, kind: str, bounds: str, sql: str) -> None:
    """orders ⋈ payments by user (a Zipf string key), ``kind`` with ``bounds``, vs DuckDB."""
    lp, rp, left, right = two_sides(tmp_path)
    body = SOURCE.format(name="orders", path=lp) + SOURCE.format(name="payments", path=rp) + f"""
[query.join]
type = "{kind}"
left = "orders"
right = "payments"
left_key = "user"
right_key = "user"
{bounds}
left_prefix = "o_"
right_prefix = "p_"
"""
    check(tmp_path, kind, body, sql, {"l": left, "r": right})


def test_interval_join_on_string_keys(tmp_path: Path) -> None:
    join_on_string_keys(tmp_path, "interval", "lower_ms = -500\nupper_ms = 1500", """
SELECT l.ts AS o_ts, l."user" AS o_user, l.oid AS o_oid, r.ts AS p_ts, r."user" AS p_user,
       r.pay AS p_pay
FROM l JOIN r ON l."user" = r."user" AND r.ts - l.ts BETWEEN -500 AND 1500""")


def test_asof_join_on_string_keys(tmp_path: Path) -> None:
    within = "l.ts - r.ts <= 3000"
    join_on_string_keys(tmp_path, "asof", "tolerance_ms = 3000", f"""
SELECT l.ts AS o_ts, l."user" AS o_user, l.oid AS o_oid,
       CASE WHEN {within} THEN r.ts END AS p_ts, CASE WHEN {within} THEN r."user" END AS p_user,
       CASE WHEN {within} THEN r.pay END AS p_pay
FROM l ASOF LEFT JOIN r ON l."user" = r."user" AND l.ts >= r.ts""")
