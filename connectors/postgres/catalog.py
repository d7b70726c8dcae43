"""What the change-capture source asks the server before it reads: settings, tables, slots.

Every check raises ``ConfigError`` that says what to configure, in the
server's own terms (the setting, the SQL statement). Functions take a psycopg2
connection in autocommit mode and ``where`` (``sources.<name>``) for messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.postgres.columns import Column, UnsupportedColumn, arrow_type
from connectors.postgres.types import quote_table
from engine.errors import ConfigError, ConnectorError, TransientError


def connect(dsn: str, replication: bool, where: str) -> Any:
    """A psycopg2 connection (autocommit), or a logical replication one; a refused connection
    is a ``TransientError`` naming why."""
    import psycopg2
    import psycopg2.extras

    factory = psycopg2.extras.LogicalReplicationConnection if replication else None
    try:
        conn = psycopg2.connect(dsn, connection_factory=factory)
    except psycopg2.OperationalError as exc:
        hint = " (a replication connection: pg_hba.conf must allow it)" if replication else ""
        raise TransientError(f"{where}: cannot connect to PostgreSQL{hint}: "
                             f"{str(exc).strip()}") from exc  # fmt: skip
    except psycopg2.Error as exc:  # a DSN that does not parse (ProgrammingError)
        raise ConfigError(f"{where}.dsn: {str(exc).strip()}") from exc
    if not replication:
        conn.autocommit = True
    return conn


def sql(conn: Any, text: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(text, args)
        return cur.fetchall() if cur.description else []


def check_server(conn: Any, where: str) -> None:
    """``wal_level = logical`` and a role that may replicate."""
    level = sql(conn, "SHOW wal_level")[0][0]
    if level != "logical":
        raise ConfigError(
            f"{where}: the server has wal_level = {level}; change capture needs "
            "wal_level = logical (set it in postgresql.conf, or ALTER SYSTEM SET wal_level = "
            "logical, and restart the server)"
        )
    user, ok = sql(
        conn,
        "SELECT current_user, rolreplication OR rolsuper FROM pg_roles "
        "WHERE rolname = current_user",
    )[0]
    if not ok:
        raise ConfigError(
            f'{where}: role {user!r} may not use replication: ALTER ROLE "{user}" REPLICATION '
            "(and allow it in pg_hba.conf), or connect as a role that may"
        )


@dataclass(frozen=True)
class Table:
    """A captured table as it is now: ``name`` is ``schema.table``; ``key`` its primary key."""

    name: str
    sql: str  # quoted, for statements
    oid: int
    columns: tuple[Column, ...]
    oids: tuple[int, ...]  # each column's type oid, as the change stream names it
    key: tuple[str, ...]
    replica_identity: str  # d, f, i, n

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def table(conn: Any, name: str, where: str) -> Table:
    """``name`` (``table`` or ``schema.table``) read from the catalog, every column mapped."""
    quoted = quote_table(name, f"{where}.tables")
    found = sql(
        conn,
        "SELECT c.oid, n.nspname, c.relname, c.relreplident, c.relkind "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = to_regclass(%s)",
        (quoted,),
    )
    if not found:
        raise ConfigError(f"{where}.tables: table {name!r} does not exist")
    oid, nsp, rel, identity, kind = found[0]
    if kind not in ("r", "p"):
        raise ConfigError(
            f"{where}.tables: {name!r} is not a table (relkind {kind!r}); "
            "logical replication publishes tables only"
        )
    rows = sql(
        conn,
        "SELECT a.attname, a.atttypid, a.atttypmod, format_type(a.atttypid, a.atttypmod), "
        "       bt.typname, bt.typtype, "
        "       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END, a.attnotnull "
        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END "
        "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (oid,),
    )
    columns, oids = [], []
    for att, typid, _, shown, base, typtype, typmod, notnull in rows:
        col = Column(att, base, typmod, shown, typtype, not notnull)
        try:
            arrow_type(col)
        except UnsupportedColumn as exc:
            raise ConfigError(f"{where}.tables: {nsp}.{rel}: {exc}") from None
        columns.append(col)
        oids.append(typid)
    key = [
        r[0]
        for r in sql(
            conn,
            "SELECT a.attname FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, ord), "
            "pg_attribute a WHERE i.indrelid = %s AND i.indisprimary AND a.attrelid = i.indrelid "
            "AND a.attnum = k.attnum ORDER BY k.ord",
            (oid,),
        )
    ]
    return Table(
        f"{nsp}.{rel}", f'"{nsp}"."{rel}"', oid, tuple(columns), tuple(oids), tuple(key), identity
    )


def ensure_publication(
    conn: Any, publication: str, tables: list[Table], create: bool, where: str
) -> None:
    """The publication exists and publishes every table (created or extended if ``create``)."""
    exists = sql(conn, "SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,))
    listed = ", ".join(t.sql for t in tables)
    if not exists:
        if not create:
            raise ConfigError(
                f"{where}: publication {publication!r} does not exist: "
                f'CREATE PUBLICATION "{publication}" FOR TABLE {listed} '
                "(or set create = true)"
            )
        sql(conn, f'CREATE PUBLICATION "{publication}" FOR TABLE {listed}')
        return
    have = {
        f"{s}.{t}"
        for s, t in sql(
            conn,
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
            (publication,),
        )
    }
    missing = [t for t in tables if t.name not in have]
    if missing:
        names = ", ".join(t.sql for t in missing)
        if not create:
            raise ConfigError(
                f"{where}: publication {publication!r} does not publish "
                f'{[t.name for t in missing]}: ALTER PUBLICATION "{publication}" '
                f"ADD TABLE {names}"
            )
        sql(conn, f'ALTER PUBLICATION "{publication}" ADD TABLE {names}')


def ensure_full_identity(conn: Any, tables: list[Table], alter: bool, where: str) -> None:
    """Every table sends whole old rows (``REPLICA IDENTITY FULL``): a retraction needs them."""
    for t in tables:
        if t.replica_identity == "f":
            continue
        if not alter:
            raise ConfigError(
                f"{where}: table {t.name} has REPLICA IDENTITY "
                f"{ {'d': 'DEFAULT', 'i': 'USING INDEX', 'n': 'NOTHING'}[t.replica_identity] }: "
                "updates and deletes would not carry the old row that a retraction needs: "
                f"ALTER TABLE {t.sql} REPLICA IDENTITY FULL (or set replica_identity_full = true)"
            )
        sql(conn, f"ALTER TABLE {t.sql} REPLICA IDENTITY FULL")


@dataclass(frozen=True)
class Slot:
    plugin: str | None
    database: str | None
    confirmed_lsn: str | None
    active_pid: int | None
    temporary: bool


def slot(conn: Any, name: str) -> Slot | None:
    rows = sql(
        conn,
        "SELECT plugin, database, confirmed_flush_lsn::text, active_pid, temporary "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (name,),
    )
    return Slot(*rows[0]) if rows else None


def check_slot(found: Slot | None, name: str, restored: dict[str, Any] | None,
               where: str) -> None:  # fmt: skip
    """A slot this source may use: ours (pgoutput), idle, and there if a checkpoint needs it."""
    from connectors.postgres.pgoutput import lsn_text

    if found is None and restored is not None:
        raise ConnectorError(
            f"{where}: replication slot {name!r} no longer exists: the changes after "
            f"{lsn_text(restored['lsn'])} that it held are lost to this pipeline. Start over "
            "with a new checkpoint directory (a new snapshot)"
        )
    if found is not None and found.active_pid is not None:  # transient: a process killed a
        raise TransientError(  # moment ago may still hold it until the server notices
            f"{where}: replication slot {name!r} is in use by server process "
            f"{found.active_pid} (another pipeline, or one that just died?)"
        )
    if found is not None and found.plugin != "pgoutput":
        raise ConfigError(f"{where}: replication slot {name!r} uses plugin {found.plugin!r}, "
                          "not pgoutput; name another slot")  # fmt: skip


def create_slot(conn: Any, name: str, temporary: bool, export: bool,
                where: str) -> tuple[int, str | None]:  # fmt: skip
    """``CREATE_REPLICATION_SLOT`` (pgoutput) on a replication connection: its consistent
    point and, with ``export``, the name of the snapshot it exported (valid while ``conn``
    stays open and idle)."""
    from connectors.postgres.pgoutput import parse_lsn

    what = ("TEMPORARY " if temporary else "") + "LOGICAL pgoutput " + (
        "EXPORT_SNAPSHOT" if export else "NOEXPORT_SNAPSHOT")  # fmt: skip
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE_REPLICATION_SLOT {name} {what}")
            _, lsn, snapshot, _ = cur.fetchone()
    except Exception as exc:
        raise ConnectorError(
            f"{where}: cannot create replication slot {name!r}: {str(exc).strip()} "
            "(is max_replication_slots used up?)"
        ) from exc
    return parse_lsn(lsn), snapshot


def lag_bytes(conn: Any, name: str) -> int | None:
    """How far the slot's confirmed position trails the server's WAL, in bytes."""
    rows = sql(
        conn,
        "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (name,),
    )
    return int(rows[0][0]) if rows and rows[0][0] is not None else None
