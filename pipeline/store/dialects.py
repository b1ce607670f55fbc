"""Per-database write paths of the store, by SQLAlchemy dialect name (`DIALECTS` registry).

The schema is SQLAlchemy Core, so any database SQLAlchemy speaks can hold a store: give its URL as `store.url`. A
dialect registered here adds the fast paths: an upsert (insert or update on a key) and a bulk insert of track boxes.
A new backend is one class with those two methods and one line, `@DIALECTS.register("mysql")`; unregistered
dialects use `GenericDialect` (portable, slower).
"""

from __future__ import annotations

from core.registry import Registry

DIALECTS: Registry = Registry("store dialect")

BOX_COLUMNS = ("run_id", "camera_id", "frame", "ts", "track_id", "x1", "y1", "x2", "y2", "score")


class GenericDialect:
    """Portable SQLAlchemy Core statements: an update-else-insert upsert, a Core bulk insert of boxes."""

    def upsert(self, conn, table, rows: list[dict], keys: list[str]) -> None:
        from sqlalchemy import and_

        for row in rows:
            cond = and_(*(table.c[k] == row[k] for k in keys))
            if conn.execute(table.update().where(cond).values(**row)).rowcount == 0:
                conn.execute(table.insert().values(**row))

    def insert_boxes(self, conn, table, rows: list[tuple]) -> None:
        conn.execute(table.insert(), [dict(zip(BOX_COLUMNS, r)) for r in rows])

    def upsert_better(self, conn, table, rows: list[dict], keys: list[str], score: str) -> None:
        """Insert rows; a row whose key exists replaces it only when its `score` column is higher."""
        from sqlalchemy import and_, select

        for row in rows:
            cond = and_(*(table.c[k] == row[k] for k in keys))
            if conn.execute(select(table.c[score]).where(cond)).first() is None:
                conn.execute(table.insert().values(**row))
            else:
                conn.execute(table.update().where(cond, table.c[score] < row[score]).values(**row))


def on_conflict_upsert(insert, conn, table, rows: list[dict], keys: list[str], better: str | None = None) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE with the dialect's own `insert` construct (SQLite, PostgreSQL);
    with `better`, an existing row is updated only when the new row's `better` column is higher."""
    stmt = insert(table)
    cols = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
    where = None if better is None else table.c[better] < stmt.excluded[better]
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=cols, where=where), rows)


@DIALECTS.register("sqlite")
class SqliteDialect(GenericDialect):
    """INSERT ... ON CONFLICT DO UPDATE; boxes through one prepared executemany of plain tuples."""

    def upsert(self, conn, table, rows: list[dict], keys: list[str]) -> None:
        from sqlalchemy.dialects.sqlite import insert

        on_conflict_upsert(insert, conn, table, rows, keys)

    def upsert_better(self, conn, table, rows: list[dict], keys: list[str], score: str) -> None:
        from sqlalchemy.dialects.sqlite import insert

        on_conflict_upsert(insert, conn, table, rows, keys, score)

    def insert_boxes(self, conn, table, rows: list[tuple]) -> None:
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(BOX_COLUMNS)}) VALUES "
                             f"({', '.join('?' * len(BOX_COLUMNS))})", rows)


@DIALECTS.register("postgresql")
class PostgresDialect(GenericDialect):
    """INSERT ... ON CONFLICT DO UPDATE; boxes through COPY (psycopg 3)."""

    def upsert(self, conn, table, rows: list[dict], keys: list[str]) -> None:
        from sqlalchemy.dialects.postgresql import insert

        on_conflict_upsert(insert, conn, table, rows, keys)

    def upsert_better(self, conn, table, rows: list[dict], keys: list[str], score: str) -> None:
        from sqlalchemy.dialects.postgresql import insert

        on_conflict_upsert(insert, conn, table, rows, keys, score)

    def insert_boxes(self, conn, table, rows: list[tuple]) -> None:
        with conn.connection.dbapi_connection.cursor() as cur:
            with cur.copy(f"COPY {table.name} ({', '.join(BOX_COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)


def dialect_of(conn) -> GenericDialect:
    """The write paths for this connection's database."""
    name = conn.dialect.name
    return DIALECTS.get(name)() if name in DIALECTS else GenericDialect()
