"""A throwaway PostgreSQL cluster for tests (``scripts/postgres``), and small SQL helpers."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "postgres"


@contextmanager
def cluster() -> Iterator[tuple[str, Path]]:
    """Start a cluster with the project's own script (it installs PostgreSQL if missing); yield
    its DSN and directory; stop and remove it. In the system temp dir: run as root, the
    server runs as `postgres`, which must reach it."""
    where = Path(tempfile.mkdtemp(prefix="ringstream-pg-"))
    started = subprocess.run([str(SCRIPT), "start", str(where)], capture_output=True,
                             text=True, timeout=600)  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        yield started.stdout.strip(), where
    finally:
        subprocess.run([str(SCRIPT), "stop", str(where)], timeout=120)


def restart(where: Path) -> None:
    """Restart the cluster in ``where`` (``scripts/postgres restart``)."""
    done = subprocess.run([str(SCRIPT), "restart", str(where)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr


def query(dsn: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run ``sql`` in autocommit; its rows (none for a statement)."""
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def table_of(dsn: str, table: str, order: str | None = None) -> pa.Table:
    """A table's rows as Arrow (psycopg2's Python values), sorted by ``order`` if given."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {table}" + (f" ORDER BY {order}" if order else ""))
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
    finally:
        conn.close()
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def clean(dsn: str) -> None:
    """Roll back leftover prepared transactions (they hold locks); drop every slot and
    publication."""
    for (gid,) in query(dsn, "SELECT gid FROM pg_prepared_xacts"):
        query(dsn, f"ROLLBACK PREPARED '{gid}'")
    for _ in range(50):  # a killed engine's server process may hold its slot a moment
        query(dsn, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                   "WHERE active_pid IS NOT NULL")  # fmt: skip
        for (slot,) in query(dsn, "SELECT slot_name FROM pg_replication_slots WHERE NOT active"):
            query(dsn, "SELECT pg_drop_replication_slot(%s)", (slot,))
        if not query(dsn, "SELECT 1 FROM pg_replication_slots"):
            break
        time.sleep(0.1)
    for (pub,) in query(dsn, "SELECT pubname FROM pg_publication"):
        query(dsn, f'DROP PUBLICATION "{pub}"')
