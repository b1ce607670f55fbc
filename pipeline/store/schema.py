"""Store schema (SQLAlchemy Core) and engine set-up.

Tables (schema version 5):
  schema_info   key/value; `version` is the schema version.
  runs          one row per pipeline run: id, started_at, ended_at (unix s), status, config (JSON), output_dir.
  cameras       (run_id, camera_id): source (credentials redacted), fps, width, height, frames, dropped, status, error.
  tracks        (run_id, camera_id, track_id): first/last frame and timestamp (s), number of boxes; since v2 the
                track's appearance: embedding (float32 L2-normalised bytes, `embedding_dim` values), the latest
                action_probs (JSON list, names in `runs.action_names`) and n_clips (clips that contributed).
  track_boxes   one row per track per frame: run_id, camera_id, frame (0-based), ts (s), track_id, x1, y1, x2, y2 (px),
                score.
  track_clips   (v2) one row per Re-ID-AR clip: run_id, camera_id, track_id, t_start, t_end (s), quality (0..1),
                reason (periodic | end), embedding (float32 bytes), action_probs (JSON list).
  identities    (v2) the final global identity of every track, per mode (online | offline): run_id, mode, camera_id,
                track_id, global_id, first_ts, last_ts (s).
  identity_links (v2) the link history, append-only: run_id, camera_id, track_id, global_id, previous_id (set when a
                track is re-linked), ts (s, run clock), reason (new | match | relink | constraint | final | offline),
                score, mode (online | offline).
  action_events (v2) one row per finished per-view action episode: id, run_id, camera_id, track_id (local), global_id
                (NULL without association / not linked when it ended), action (name from the checkpoint, or standing |
                walking | running for the motion source), source (model | motion), start_ts, end_ts (s, run clock),
                start_frame, end_frame, peak_conf, mean_conf (smoothed score 0..1), clips (score updates), frames.
  track_thumbnails (v3) the best view of every track, one row per track: run_id, camera_id, track_id, quality
                (0..1, higher is better: size, not cut by the border, not covered, sharp), ts (s) and frame of the
                crop, width, height (px; height `THUMBNAIL_HEIGHT` or less), jpeg (bytes). A better crop replaces it.
  ground_positions (v4) where each person the ground-plane fusion identified stood (association.mode fused), at
                most one row per identity per `store.ground_every_s`: run_id, ground_group (the fused group's name),
                global_id (the online id the boxes carried then), ts (s, run clock), x_m, y_m (metres, the group's
                homography frame), cameras (the views that saw them then, space-separated); since v5 sigma_m (how
                surely the position is known: the standard deviation in metres along its least certain direction).
Migrations: `MIGRATIONS[v]` upgrades a database from version v to v + 1; `open_engine` applies them in order, so a
database written by an older release keeps its runs and gains the new columns (NULL for old rows).
SQLite runs in WAL mode with synchronous=NORMAL: a crash loses at most the last uncommitted batch, never committed rows.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

SCHEMA_VERSION = 5
READABLE_SINCE = 4  # the oldest version read as it is (read-only): a v4 store's floor positions read as sigma unknown

metadata = MetaData()

schema_info = Table("schema_info", metadata, Column("key", String(64), primary_key=True), Column("value", Text))

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("status", String(16), nullable=False),
    Column("config", Text),
    Column("output_dir", Text),
    Column("action_names", Text),  # v2: JSON list naming the entries of action_probs in this run
)

cameras = Table(
    "cameras",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("camera_id", String(64), primary_key=True),
    Column("source", Text),
    Column("fps", Float),
    Column("width", Integer),
    Column("height", Integer),
    Column("frames", Integer, default=0),
    Column("dropped", Integer, default=0),
    Column("status", String(16)),
    Column("error", Text),
)

tracks = Table(
    "tracks",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("camera_id", String(64), primary_key=True),
    Column("track_id", Integer, primary_key=True),
    Column("first_frame", Integer, nullable=False),
    Column("last_frame", Integer, nullable=False),
    Column("first_ts", Float, nullable=False),
    Column("last_ts", Float, nullable=False),
    Column("n_boxes", Integer, nullable=False),
    Column("embedding", LargeBinary),  # v2
    Column("embedding_dim", Integer),  # v2
    Column("action_probs", Text),  # v2
    Column("n_clips", Integer),  # v2
)

track_clips = Table(
    "track_clips",
    metadata,
    Column("run_id", Integer, nullable=False),
    Column("camera_id", String(64), nullable=False),
    Column("track_id", Integer, nullable=False),
    Column("t_start", Float, nullable=False),
    Column("t_end", Float, nullable=False),
    Column("quality", Float, nullable=False),
    Column("reason", String(16), nullable=False),
    Column("embedding", LargeBinary, nullable=False),
    Column("action_probs", Text, nullable=False),
    Index("ix_track_clips_track", "run_id", "camera_id", "track_id"),
)

track_boxes = Table(
    "track_boxes",
    metadata,
    Column("run_id", Integer, nullable=False),
    Column("camera_id", String(64), nullable=False),
    Column("frame", Integer, nullable=False),
    Column("ts", Float, nullable=False),
    Column("track_id", Integer, nullable=False),
    Column("x1", Float, nullable=False),
    Column("y1", Float, nullable=False),
    Column("x2", Float, nullable=False),
    Column("y2", Float, nullable=False),
    Column("score", Float, nullable=False),
    Index("ix_track_boxes_track", "run_id", "camera_id", "track_id"),
    Index("ix_track_boxes_time", "run_id", "ts"),
)


identities = Table(
    "identities",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("mode", String(16), primary_key=True),
    Column("camera_id", String(64), primary_key=True),
    Column("track_id", Integer, primary_key=True),
    Column("global_id", Integer, nullable=False),
    Column("first_ts", Float),
    Column("last_ts", Float),
    Index("ix_identities_global", "run_id", "mode", "global_id"),
)

identity_links = Table(
    "identity_links",
    metadata,
    Column("run_id", Integer, nullable=False),
    Column("camera_id", String(64), nullable=False),
    Column("track_id", Integer, nullable=False),
    Column("global_id", Integer, nullable=False),
    Column("previous_id", Integer),
    Column("ts", Float, nullable=False),
    Column("reason", String(16), nullable=False),
    Column("score", Float),
    Column("mode", String(16), nullable=False),
    Index("ix_identity_links_track", "run_id", "camera_id", "track_id"),
)


action_events = Table(
    "action_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, nullable=False),
    Column("camera_id", String(64), nullable=False),
    Column("track_id", Integer, nullable=False),
    Column("global_id", Integer),
    Column("action", String(64), nullable=False),
    Column("source", String(16), nullable=False),
    Column("start_ts", Float, nullable=False),
    Column("end_ts", Float, nullable=False),
    Column("start_frame", Integer, nullable=False),
    Column("end_frame", Integer, nullable=False),
    Column("peak_conf", Float, nullable=False),
    Column("mean_conf", Float, nullable=False),
    Column("clips", Integer, nullable=False),
    Column("frames", Integer, nullable=False),
    Index("ix_action_events_time", "run_id", "start_ts"),
    Index("ix_action_events_track", "run_id", "camera_id", "track_id"),
    Index("ix_action_events_global", "run_id", "global_id"),
)


track_thumbnails = Table(
    "track_thumbnails",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("camera_id", String(64), primary_key=True),
    Column("track_id", Integer, primary_key=True),
    Column("quality", Float, nullable=False),
    Column("ts", Float),
    Column("frame", Integer),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("jpeg", LargeBinary, nullable=False),
)


ground_positions = Table(
    "ground_positions",
    metadata,
    Column("run_id", Integer, nullable=False),
    Column("ground_group", String(256), nullable=False),
    Column("global_id", Integer, nullable=False),
    Column("ts", Float, nullable=False),
    Column("x_m", Float, nullable=False),
    Column("y_m", Float, nullable=False),
    Column("cameras", Text),
    Column("sigma_m", Float),  # v5: how surely the position is known (m); NULL: unknown (a v4 row)
    Index("ix_ground_positions_id", "run_id", "global_id", "ts"),
    Index("ix_ground_positions_time", "run_id", "ts"),
)


def _migrate_1_to_2(conn) -> None:
    """v2: track appearance columns, run action names (the `track_clips`, `identities`, `identity_links` and
    `action_events` tables are created by `create_all`)."""
    blob = "BYTEA" if conn.dialect.name == "postgresql" else "BLOB"
    for table, column, kind in [
        ("runs", "action_names", "TEXT"),
        ("tracks", "embedding", blob),
        ("tracks", "embedding_dim", "INTEGER"),
        ("tracks", "action_probs", "TEXT"),
        ("tracks", "n_clips", "INTEGER"),
    ]:
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {kind}"))


def _migrate_2_to_3(conn) -> None:
    """v3: the `track_thumbnails` table only (created by `create_all`); existing tables are unchanged."""


def _migrate_3_to_4(conn) -> None:
    """v4: the `ground_positions` table only (created by `create_all`); existing tables are unchanged."""


def _migrate_4_to_5(conn) -> None:
    """v5: ground_positions.sigma_m, how surely each floor position is known (NULL for the rows already there)."""
    found = inspect(conn)
    if "ground_positions" in found.get_table_names() and \
            "sigma_m" not in {c["name"] for c in found.get_columns("ground_positions")}:
        conn.execute(text("ALTER TABLE ground_positions ADD COLUMN sigma_m FLOAT"))


MIGRATIONS = {1: _migrate_1_to_2, 2: _migrate_2_to_3, 3: _migrate_3_to_4, 4: _migrate_4_to_5}


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message names the database and the fix."""


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    if isinstance(dbapi_conn, sqlite3.Connection):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def redact_db_url(url: str) -> str:
    """The URL with any password hidden, for logs and errors."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "<unparseable database URL>"


def _readonly_sqlite_pragmas(dbapi_conn, _record) -> None:
    if isinstance(dbapi_conn, sqlite3.Connection):
        dbapi_conn.execute("PRAGMA busy_timeout=10000")


def open_engine_readonly(url: str) -> Engine:
    """Open an EXISTING store for reading: nothing is created, migrated or written (SQLite opens the file with
    `mode=ro`; PostgreSQL transactions are READ ONLY). A missing file, an unreachable server, a database that is not
    an mcsa store or one with a schema version outside READABLE_SINCE..SCHEMA_VERSION is a one-line `StoreError`."""
    shown = redact_db_url(url)
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001
        raise StoreError(f"store URL {url!r} is not a database URL (e.g. sqlite:///out/events.db)") from None
    try:
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            db = parsed.database or ""
            if not db or db == ":memory:" or db.startswith("file:"):
                raise StoreError(f"store {shown} names no database file (e.g. sqlite:///out/events.db)")
            path = Path(db).expanduser()
            if not path.is_file():
                raise StoreError(f"store {shown} does not exist: no file {path} (nothing was created; check the path, "
                                 "or run the pipeline first)")
            ro = f"sqlite:///file:{quote(str(path.resolve()))}?mode=ro&uri=true"
            engine = create_engine(ro, future=True)
            event.listen(engine, "connect", _readonly_sqlite_pragmas)
        else:
            connect_args = {}
            if backend == "postgresql" and "connect_timeout" not in parsed.query:
                connect_args["connect_timeout"] = 5  # an unreachable host fails in seconds, not minutes
            engine = create_engine(url, future=True, connect_args=connect_args)
            if backend == "postgresql":
                engine = engine.execution_options(postgresql_readonly=True)
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            if not {"schema_info", "runs"} <= tables:
                raise StoreError(f"database {shown} is not an mcsa event store (no runs / schema_info tables); "
                                 "check the URL")
            row = conn.execute(select(schema_info.c.value).where(schema_info.c.key == "version")).first()
            version = int(row[0]) if row else 0
        if not READABLE_SINCE <= version <= SCHEMA_VERSION:
            newer = version > SCHEMA_VERSION
            raise StoreError(
                f"database {shown} has schema version {version}, {'newer' if newer else 'older'} than this program's "
                f"{SCHEMA_VERSION} ({'upgrade mcsa' if newer else 'a run on it migrates it in place'}; a query never "
                "writes)"
            )
    except StoreError:
        raise
    except (SQLAlchemyError, ImportError) as err:
        cause = (str(getattr(err, "orig", err)).strip().splitlines() or [type(err).__name__])[0]
        raise StoreError(f"cannot open store {shown}: {cause} (check the URL, that the server is up and reachable, "
                         "and the credentials)") from None
    return engine


def open_engine(url: str) -> Engine:
    """Create the engine, create missing tables and check/record the schema version."""
    shown = redact_db_url(url)
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001
        raise StoreError(f"store.url {url!r} is not a database URL (e.g. sqlite:///out/events.db)") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        parent = Path(parsed.database).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the folder {parent} for database {shown}: {err.strerror}") from None
    try:
        engine = create_engine(url, future=True)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        with engine.begin() as conn:
            existing = set(inspect(conn).get_table_names())
            version = SCHEMA_VERSION
            if "schema_info" in existing:
                row = conn.execute(select(schema_info.c.value).where(schema_info.c.key == "version")).first()
                version = int(row[0]) if row else 0
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"database {shown} has schema version {version}, newer than this program's {SCHEMA_VERSION} "
                        "(upgrade mcsa or use another store.url)"
                    )
                if version < 1 or any(v not in MIGRATIONS for v in range(version, SCHEMA_VERSION)):
                    raise StoreError(f"database {shown} has schema version {version}, which cannot be migrated "
                                     f"(use another store.url)")
                for v in range(version, SCHEMA_VERSION):
                    MIGRATIONS[v](conn)
                    logging.getLogger("mcsa.store").info("store %s migrated from schema v%d to v%d", shown, v, v + 1)
            metadata.create_all(conn)
            if "schema_info" not in existing:
                conn.execute(schema_info.insert().values(key="version", value=str(SCHEMA_VERSION)))
            elif version != SCHEMA_VERSION:
                conn.execute(update(schema_info).where(schema_info.c.key == "version").values(value=str(SCHEMA_VERSION)))
    except StoreError:
        raise
    except SQLAlchemyError as err:
        cause = str(getattr(err, "orig", err)).splitlines()[0]
        raise StoreError(f"cannot open database {shown}: {cause} (check store.url, permissions and free space)") from None
    return engine
