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

QUERIES: dict[str, str] = {"q0": Q0, "q1": Q1, "q2": Q2, "q5": Q5, "q7": Q7, "q8": Q8}

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
    "q5": ["window_start", "window_end", "max_count", "auction"],
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
    table = table.select(schema.names).cast(schema)
    order = [(name, "ascending") for name in SORT_KEYS[query]]
    return table.sort_by(order).combine_chunks()


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
