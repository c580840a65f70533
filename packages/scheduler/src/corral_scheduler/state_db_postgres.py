"""The state store on PostgreSQL, through psycopg 3 (`pip install 'corral-scheduler[postgres]'`).

One connection per component, in autocommit mode like the SQLite one; `transaction` is psycopg's.
A connection the server dropped (a restart, a failover) is opened again before the next statement
outside a transaction; the statement that met the drop fails, as a write to a full disk would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from corral_scheduler.state_db import POSTGRES, Cursor, Database, StateStoreError, refuse_nul
from corral_scheduler.state_url import PostgresState, scrub_password

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT_S = 10
# A statement bounded in time, and a dead server noticed by TCP keepalives within ~11 s: a server
# that a network partition cut off cannot freeze the plane (and its lease renewals) for minutes.
STATEMENT_TIMEOUT_MS = 15_000
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
# Any constant: the key of the advisory lock that serializes schema creation between control planes.
_SCHEMA_LOCK_KEY = 7_470_001


def _require_driver() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise StateStoreError(
            "a postgresql:// state URL needs the psycopg driver: pip install 'corral-scheduler[postgres]'"
        ) from None


class PostgresDatabase(Database):
    dialect = POSTGRES
    location: PostgresState

    def __init__(self, location: PostgresState) -> None:
        _require_driver()
        self.location = location
        self._conn = self._connect()
        self._depth = 0

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        import psycopg

        try:
            # The URL's own `options` (if any) are kept; the statement timeout is added to them.
            options = psycopg.conninfo.conninfo_to_dict(self.location.url).get("options") or ""
            options = f"{options} -c statement_timeout={STATEMENT_TIMEOUT_MS}".strip()
            conninfo = psycopg.conninfo.make_conninfo(self.location.url, options=options, **KEEPALIVES)
            return psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                   application_name="corral-control-plane")
        except psycopg.Error as err:
            reason = " ".join(scrub_password(str(err), self.location).split())
            raise StateStoreError(f"cannot open the state store, {self.location.describe()}: {reason}") from None

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._depth == 0 and (self._conn.broken or self._conn.closed):
            self._conn = self._connect()
        return self._conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor:
        refuse_nul(params)
        connection = self._connection()
        if not params:
            return connection.execute(sql.encode())  # as written: no placeholder processing
        return connection.execute(sql.replace("%", "%%").replace("?", "%s").encode(), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        for row in rows:
            refuse_nul(row)
        with self._connection().cursor() as cursor:
            cursor.executemany(sql.replace("%", "%%").replace("?", "%s").encode(), [tuple(row) for row in rows])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        connection = self._connection()
        self._depth += 1
        try:
            with connection.transaction():
                yield
        finally:
            self._depth -= 1

    def _lock_schema(self) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK_KEY,))

    def columns(self, table: str) -> set[str]:
        rows = self.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        ).fetchall()
        return {row[0] for row in rows}

    def scrub(self, tables: Sequence[str]) -> None:
        # VACUUM FULL writes each table anew; the old files, with the old row versions, are removed.
        self.execute(f"VACUUM FULL {', '.join(tables)}")

    def close(self) -> None:
        self._conn.close()


__all__ = ["CONNECT_TIMEOUT_S", "KEEPALIVES", "STATEMENT_TIMEOUT_MS", "PostgresDatabase"]
