"""Store backends for tests: a fresh SQLite file, or a fresh schema on the PostgreSQL server named by
$MCSA_TEST_PG_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test), dropped after the test.

Use `store_url` (parametrised over both) in a test module with `from tests.store_backends import store_url`.
PostgreSQL tests skip, with the reason, when the server cannot be reached.
"""

from __future__ import annotations

import os
import uuid

import pytest

PG_URL = os.environ.get("MCSA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def pg_schema_url(base: str = PG_URL):
    """(url with search_path set to a new schema, drop function); skips the test when the server is unreachable."""
    pytest.importorskip("psycopg", reason="PostgreSQL tests need the psycopg package")
    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, future=True, connect_args={"connect_timeout": 3})
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {name}"))
    except Exception as err:  # noqa: BLE001
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at {base} ({str(err).splitlines()[0]}); set MCSA_TEST_PG_URL")
    sep = "&" if "?" in base else "?"

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        admin.dispose()

    return f"{base}{sep}options=-csearch_path%3D{name}", drop


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A database URL on an empty store: SQLite file, or a throw-away PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'events.db'}"
        return
    url, drop = pg_schema_url()
    try:
        yield url
    finally:
        drop()
