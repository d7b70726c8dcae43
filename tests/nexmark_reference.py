"""Reference results of the Nexmark queries, computed by DuckDB over whole tables.

This is the contract the engine's Nexmark pipelines implement: for each query
the SQL below defines the rows, ``OUTPUT_SCHEMAS`` the column names, order and
types, and ``SORT_KEYS`` the canonical row order. ``reference(query, tables)``
returns the canonical result; ``canonical(query, table)`` puts an engine
output into the same shape and order, so the two compare with ``equals``.

Event times enter DuckDB as int64 epoch milliseconds (``date_time`` cast from
``timestamp[ms]``), so all window arithmetic is exact integer arithmetic;
windows are epoch-aligned, ``[start, start + size)``.

``generate_tables`` produces the input tables by draining ``NexmarkSource``
instances, so the reference sees exactly the rows the engine reads.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from connectors.base import ConnectorConfig
from connectors.nexmark import SCHEMAS, NexmarkSource

_TS = pa.timestamp("ms")

# q0 pass-through: every bid, unchanged.
Q0 = "SELECT auction, bidder, price, channel, url, date_time, extra FROM bid"

# q1 currency conversion: the price in euros as float64 (price * 0.908 in double precision).
Q1 = """
SELECT auction, bidder, CAST(price AS DOUBLE) * CAST(0.908 AS DOUBLE) AS price_eur, date_time
FROM bid
"""

# q2 selection: bids on every 123rd auction.
Q2 = "SELECT auction, price FROM bid WHERE auction % 123 = 0"

# q5 hot items: hopping windows of 10 s sliding by 2 s ([s, s + 10 s), s a multiple of 2 s);
# bids counted per (window, auction); per window the largest count and the smallest auction
# having it. A bid at t belongs to the 5 windows starting at (t // 2000 - k) * 2000, k = 0..4.
Q5 = """
WITH counts AS (
    SELECT (date_time // 2000 - k) * 2000 AS window_start, auction, count(*) AS n
    FROM bid CROSS JOIN range(5) AS r(k)
    GROUP BY ALL
),
top AS (SELECT window_start, max(n) AS max_count FROM counts GROUP BY window_start)
SELECT top.window_start, top.window_start + 10000 AS window_end, top.max_count,
       min(counts.auction) AS auction
FROM top JOIN counts ON counts.window_start = top.window_start AND counts.n = top.max_count
GROUP BY top.window_start, top.max_count
"""

# q7 highest bid: tumbling 10 s windows; per window the highest price, and the smallest
# auction and the smallest bidder among the bids at that price (chosen independently).
Q7 = """
WITH w AS (SELECT date_time // 10000 * 10000 AS window_start, auction, bidder, price FROM bid),
top AS (SELECT window_start, max(price) AS price FROM w GROUP BY window_start)
SELECT top.window_start, top.window_start + 10000 AS window_end, top.price,
       min(w.auction) AS auction, min(w.bidder) AS bidder
FROM top JOIN w ON w.window_start = top.window_start AND w.price = top.price
GROUP BY top.window_start, top.price
"""

# q8 new users: a person and an auction they sell, opened within 10 s of each other (inclusive)
# and in the same 10 s tumbling window; one row per (person, auction) pair.
Q8 = """
SELECT p.id AS p_id, p.name AS p_name, a.id AS a_id, a.reserve AS a_reserve,
       p.date_time // 10000 * 10000 AS window_start
FROM person AS p JOIN auction AS a
  ON p.id = a.seller
 AND a.date_time - p.date_time BETWEEN -10000 AND 10000
 AND p.date_time // 10000 = a.date_time // 10000
"""

# q3 local item suggestion: auctions of category 10 by sellers in Oregon, Idaho or California
# (an inner join without time bounds).
Q3 = """
SELECT p.name, p.city, p.state, a.id
FROM auction AS a JOIN person AS p ON a.seller = p.id
WHERE p.state IN ('OR', 'ID', 'CA') AND a.category = 10
"""

# The closing price of every auction with a bid made while it was open (bid.date_time between
# the auction's date_time and expires, inclusive): its highest bid. q4 and q6 build on it.
_WINNING = """
WITH winning AS (
    SELECT a.id AS auction, a.seller, a.category, a.expires, max(b.price) AS final
    FROM auction AS a JOIN bid AS b
      ON a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires
    GROUP BY a.id, a.seller, a.category, a.expires
)
"""

# q4 average price for a category: the average closing price per category.
Q4 = _WINNING + "SELECT category, avg(final) AS avg_price FROM winning GROUP BY category"

# q6 average selling price by seller: per closed auction, the average closing price of its
# seller's last 10 closed auctions (this one included), in order of expiry, then auction id.
Q6 = _WINNING + """
SELECT seller, auction, expires, final,
       avg(final) OVER (PARTITION BY seller ORDER BY expires, auction
                        ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) AS avg_price
FROM winning
"""

QUERIES: dict[str, str] = {
    "q0": Q0, "q1": Q1, "q2": Q2, "q3": Q3, "q4": Q4, "q5": Q5, "q6": Q6, "q7": Q7, "q8": Q8,
}  # fmt: skip

OUTPUT_SCHEMAS: dict[str, pa.Schema] = {
    "q0": SCHEMAS["bid"],
    "q1": pa.schema(
        [
            ("auction", pa.int64()),
            ("bidder", pa.int64()),
            ("price_eur", pa.float64()),
            ("date_time", _TS),
        ]
    ),
    "q2": pa.schema([("auction", pa.int64()), ("price", pa.int64())]),
    "q3": pa.schema(
        [
            ("name", pa.string()),
            ("city", pa.string()),
            ("state", pa.string()),
            ("id", pa.int64()),
        ]
    ),
    "q4": pa.schema([("category", pa.int64()), ("avg_price", pa.float64())]),
    "q6": pa.schema(
        [
            ("seller", pa.int64()),
            ("auction", pa.int64()),
            ("expires", _TS),
            ("final", pa.int64()),
            ("avg_price", pa.float64()),
        ]
    ),
    "q5": pa.schema(
        [
            ("window_start", _TS),
            ("window_end", _TS),
            ("max_count", pa.int64()),
            ("auction", pa.int64()),
        ]
    ),
    "q7": pa.schema(
        [
            ("window_start", _TS),
            ("window_end", _TS),
            ("price", pa.int64()),
            ("auction", pa.int64()),
            ("bidder", pa.int64()),
        ]
    ),
    "q8": pa.schema(
        [
            ("p_id", pa.int64()),
            ("p_name", pa.string()),
            ("a_id", pa.int64()),
            ("a_reserve", pa.int64()),
            ("window_start", _TS),
        ]
    ),
}

# Canonical row order: every column, so that equal multisets of rows sort identically.
SORT_KEYS: dict[str, list[str]] = {
    "q0": ["date_time", "auction", "bidder", "price", "channel", "url", "extra"],
    "q1": ["date_time", "auction", "bidder", "price_eur"],
    "q2": ["auction", "price"],
    "q3": ["id", "name", "city", "state"],
    "q4": ["category", "avg_price"],
    "q5": ["window_start", "window_end", "max_count", "auction"],
    "q6": ["seller", "expires", "auction", "final", "avg_price"],
    "q7": ["window_start", "window_end", "price", "auction", "bidder"],
    "q8": ["window_start", "p_id", "a_id", "p_name", "a_reserve"],
}


def _ms_table(table: pa.Table) -> pa.Table:
    """The table with its timestamp columns as int64 epoch milliseconds."""
    fields = [
        pa.field(f.name, pa.int64()) if pa.types.is_timestamp(f.type) else f for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def canonical(query: str, table: pa.Table) -> pa.Table:
    """``table`` (a result of ``query``) with the reference's columns, types and row order."""
    if query not in QUERIES:
        raise KeyError(f"unknown Nexmark query {query!r}; known: {sorted(QUERIES)}")
    schema = OUTPUT_SCHEMAS[query]
    if "_change" in table.column_names:
        table = folded(table)
    table = table.select(schema.names).cast(schema)
    order = [(name, "ascending") for name in SORT_KEYS[query]]
    return table.sort_by(order).combine_chunks()


def folded(changelog: pa.Table) -> pa.Table:
    """The table a changelog describes: each distinct row (all columns but ``_change``) as
    many times as its ``_change`` values add up to (a retracted row adds up to 0)."""
    rest = [c for c in changelog.column_names if c != "_change"]
    net = changelog.group_by(rest, use_threads=False).aggregate([("_change", "sum")])
    counts = net.column("_change_sum").to_numpy()
    if (counts < 0).any():
        bad = net.filter(pa.array(counts < 0))
        raise ValueError(f"the changelog retracts rows it never inserted: {bad}")
    repeat = np.repeat(np.arange(net.num_rows), np.maximum(counts, 0))
    return net.select(rest).take(pa.array(repeat))


def reference(query: str, tables: dict[str, pa.Table]) -> pa.Table:
    """The result of Nexmark ``query`` over ``tables`` ("bid", "auction", "person"), canonical."""
    if query not in QUERIES:
        raise KeyError(f"unknown Nexmark query {query!r}; known: {sorted(QUERIES)}")
    con = duckdb.connect()
    try:
        con.execute("SET threads TO 1")  # a deterministic, small footprint inside tests
        for name in ("bid", "auction", "person"):
            table = tables.get(name, SCHEMAS[name].empty_table())
            con.register(name, _ms_table(table))
        relation = con.sql(QUERIES[query])
        # newer duckdb names it to_arrow_table; 1.x releases call it arrow()
        fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
        result = fetch()
    finally:
        con.close()
    return canonical(query, result)


def generate_tables(
    events: int,
    seed: int,
    events_per_second: int = 1_000_000,
    batch_rows: int = 65_536,
    **options: Any,
) -> dict[str, pa.Table]:
    """The bid, auction and person tables of the first ``events`` model events of ``seed``.

    Each table is drained from a ``NexmarkSource`` of that kind (one instance);
    ``options`` are further source options (``start_ms``, ``max_out_of_orderness_ms``).
    """
    if events < 1:
        raise ValueError(f"events={events} must be >= 1 (0 would be an unbounded stream)")
    tables = {}
    for kind in ("bid", "auction", "person"):
        source = NexmarkSource()
        source.open(
            ConnectorConfig(
                name=f"nexmark-{kind}",
                options={
                    "kind": kind,
                    "events": events,
                    "seed": seed,
                    "events_per_second": events_per_second,
                    "batch_rows": batch_rows,
                    **options,
                },
            )
        )
        batches = []
        while not source.finished():
            polled = source.poll_batch(1 << 30)
            if polled is not None:
                batches.append(polled.batch)
        source.close()
        tables[kind] = pa.Table.from_batches(batches, schema=source.schema())
    return tables
