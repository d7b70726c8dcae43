"""A writer process for the change-capture tests: random inserts, updates (some of the key,
some of the group) and deletes, in transactions of random size, on one table::

    cdc_items (id bigint primary key, grp text, amount bigint, price numeric(12, 2), note text)

``python -m tests.cdc_writer DSN SEED TRANSACTIONS [PAUSE_MS]`` runs ``TRANSACTIONS``
transactions, sleeping ``PAUSE_MS`` between them, and prints the number of rows left.
The rows present at the start are read first, so a writer can continue another's work.
"""

from __future__ import annotations

import random
import sys
import time
from typing import Any

import psycopg2

TABLE = "cdc_items"
CREATE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY, grp text NOT NULL, "
    "amount bigint NOT NULL, price numeric(12, 2), note text)"
)


def create(dsn: str, rows: int = 0, seed: int = 0) -> None:
    """The table, with ``rows`` initial rows (ids 1..rows)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(CREATE)
        if rows:
            cur.execute(
                f"INSERT INTO {TABLE} SELECT g, 'g' || (g * 7 + %s) %% 13, g %% 1000, "
                "(g %% 997) / 4.0, CASE WHEN g %% 5 = 0 THEN NULL ELSE 'n' || g END "
                "FROM generate_series(1, %s) g",
                (seed, rows),
            )
    conn.close()


def write(dsn: str, seed: int, transactions: int, pause_s: float = 0.0) -> int:
    """``transactions`` committed transactions; a lost connection (a server restart) loses
    the transaction in progress, and the writer reconnects and goes on."""
    rng = random.Random(seed)
    ids: set[int] = set()
    conn = None
    next_id = 1_000_000 + seed * 10_000_000
    done = 0
    while done < transactions:
        try:
            if conn is None:
                conn = psycopg2.connect(dsn)
                with conn.cursor() as cur:
                    cur.execute(f"SELECT id FROM {TABLE}")
                    ids = {r[0] for r in cur.fetchall()}
                conn.commit()
                next_id = max(next_id, max(ids, default=0))
            with conn.cursor() as cur:
                next_id = _transaction(cur, rng, ids, next_id)
            conn.commit()
            done += 1
        except psycopg2.OperationalError:
            conn = None
            time.sleep(0.2)
            continue
        if pause_s:
            time.sleep(pause_s)
    assert conn is not None
    conn.close()
    return len(ids)


def _transaction(cur: Any, rng: random.Random, ids: set[int], next_id: int) -> int:
    for _ in range(rng.randint(1, 20)):
        op = rng.random()
        if op < 0.6 or not ids:
            next_id += 1
            cur.execute(
                f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s, %s)",
                (next_id, f"g{rng.randrange(13)}", rng.randrange(1000),
                 round(rng.uniform(0, 500), 2), rng.choice([None, "x", "y z"])),
            )  # fmt: skip
            ids.add(next_id)
        elif op < 0.85:
            row = rng.choice(tuple(ids))
            if rng.random() < 0.1:  # the key itself changes
                next_id += 1
                cur.execute(f"UPDATE {TABLE} SET id = %s WHERE id = %s", (next_id, row))
                ids.discard(row)
                ids.add(next_id)
            else:
                cur.execute(
                    f"UPDATE {TABLE} SET amount = amount + %s, grp = %s WHERE id = %s",
                    (rng.randrange(100), f"g{rng.randrange(13)}", row),
                )
        else:
            row = rng.choice(tuple(ids))
            cur.execute(f"DELETE FROM {TABLE} WHERE id = %s", (row,))
            ids.discard(row)
    return next_id


if __name__ == "__main__":
    pause = float(sys.argv[4]) / 1000 if len(sys.argv) > 4 else 0.0
    print(write(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), pause))
