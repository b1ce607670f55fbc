"""The event store: a versioned relational schema (SQLite by default, PostgreSQL by URL) and its single writer."""

from pipeline.store.schema import SCHEMA_VERSION, StoreError, open_engine, open_engine_readonly
from pipeline.store.writer import StoreWriter

__all__ = ["SCHEMA_VERSION", "StoreError", "StoreWriter", "open_engine", "open_engine_readonly"]
