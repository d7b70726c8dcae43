"""The replication slot's lag, sampled out of band: a thread with a short-lived connection.

``LagSampler(dsn, slot, interval_s)``: after ``start()``, every ``interval_s``
a new connection asks ``pg_current_wal_lsn() - confirmed_flush_lsn`` for the
slot and closes; ``bytes`` is the last answer (None before the first, or while
the server cannot be reached: a failed sample keeps the previous value).
Nothing runs on the change stream's connection. ``stop()`` ends the thread.
"""

from __future__ import annotations

import contextlib
import threading

from connectors.postgres import catalog


class LagSampler:
    """See the module docstring."""

    def __init__(self, dsn: str, slot: str, interval_s: float) -> None:
        self.dsn, self.slot, self.interval_s = dsn, slot, interval_s
        self.bytes: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cdc-lag", daemon=True)
            self._thread.start()

    def sample(self) -> int | None:
        import psycopg2

        conn = psycopg2.connect(self.dsn, connect_timeout=5)
        try:
            conn.autocommit = True
            return catalog.lag_bytes(conn, self.slot)
        finally:
            conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(Exception):  # a missed sample; the next one may work
                self.bytes = self.sample()

    def stop(self) -> None:
        self._stop.set()
