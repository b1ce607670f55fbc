"""The store's single writer: one thread owns the database connection and writes in batched transactions.

Producers (the pipeline loop) only enqueue rows, so a slow disk never stalls detection. A batch is committed when it
reaches `batch_rows` rows or has waited `flush_interval_s`; `flush()` and `close()` write everything queued so far.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from itertools import repeat

import numpy as np
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from pipeline.store import schema
from pipeline.store.dialects import dialect_of
from pipeline.store.schema import StoreError, redact_db_url
from core.types import Tracks

log = logging.getLogger("mcsa.store")

_STOP = object()


@dataclass
class _TrackSummary:
    first_frame: int
    last_frame: int
    first_ts: float
    last_ts: float
    n_boxes: int
    embedding: bytes | None = None
    embedding_dim: int | None = None
    action_probs: str | None = None
    n_clips: int | None = None


def upsert(conn, table, rows: list[dict], keys: list[str]) -> None:
    """Insert rows, updating the non-key columns of rows whose key already exists (the dialect's own statement)."""
    if rows:
        dialect_of(conn).upsert(conn, table, rows, keys)


def upsert_better(conn, table, rows: list[dict], keys: list[str], score: str) -> None:
    """Like `upsert`, but an existing row is replaced only when the new row's `score` column is higher."""
    if rows:
        dialect_of(conn).upsert_better(conn, table, rows, keys, score)


def insert_boxes(conn, rows: list[tuple]) -> None:
    """Bulk-insert `track_boxes` row tuples (`BOX_COLUMNS` order) inside the caller's transaction: COPY on
    PostgreSQL, one prepared executemany on SQLite (both >= 5x the per-row-dict Core insert)."""
    dialect_of(conn).insert_boxes(conn, schema.track_boxes, rows)


def _probs_json(action_probs: np.ndarray) -> str:
    """Action probabilities (A,) as a compact JSON list (5 decimals)."""
    return json.dumps([round(float(p), 5) for p in np.asarray(action_probs).ravel()])


class StoreWriter:
    """Owns one run in the store. Thread-safe for producers; all database writes happen on the writer thread."""

    def __init__(self, engine: Engine, batch_rows: int = 5000, flush_interval_s: float = 1.0) -> None:
        self.engine = engine
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s
        self.run_id: int | None = None
        self.error: str | None = None
        self.rows_written = 0
        self._queue: queue.Queue = queue.Queue()
        self._tracks: dict[tuple[str, int], _TrackSummary] = {}
        self._dirty: set[tuple[str, int]] = set()
        self._appearance: dict[tuple[str, int], dict] = {}
        self._thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
        self._closed = False

    # ---- synchronous set-up -------------------------------------------------------------------------------------
    def begin_run(self, config: dict | None = None, output_dir: str | None = None) -> int:
        """Create the run row and start the writer thread; returns the run id."""
        with self._guard():
            with self.engine.begin() as conn:
                result = conn.execute(
                    schema.runs.insert().values(
                        started_at=time.time(),
                        status="running",
                        config=json.dumps(config, default=str) if config is not None else None,
                        output_dir=output_dir,
                    )
                )
                self.run_id = int(result.inserted_primary_key[0])
        self._thread.start()
        return self.run_id

    def register_camera(self, camera_id: str, source: str, fps: float | None, width: int | None, height: int | None):
        """Record a camera of this run (source must already be redacted)."""
        self._put(
            (
                "camera",
                dict(
                    run_id=self.run_id, camera_id=camera_id, source=source, fps=fps, width=width, height=height,
                    frames=0, dropped=0, status="running", error=None,
                ),
            )
        )

    # ---- producers ----------------------------------------------------------------------------------------------
    def add_tracks(self, camera_id: str, frame_index: int, timestamp_s: float, tracks: Tracks) -> None:
        """Queue one frame's tracks of one camera."""
        if len(tracks) == 0:
            return
        # array copies, not row dicts: the writer thread turns them into row tuples (see `_box_rows`)
        self._put(("boxes", (camera_id, int(frame_index), float(timestamp_s), tracks.track_ids.copy(),
                             tracks.xyxy.copy(), tracks.scores.copy())))

    def set_action_names(self, names: list[str]) -> None:
        """Record the names of the action_probs entries of this run (from the Re-ID-AR checkpoint)."""
        self._put(("run_update", {"action_names": json.dumps(list(names))}))

    def add_clip(self, camera_id: str, track_id: int, t_start: float, t_end: float, quality: float,
                 embedding: np.ndarray, action_probs: np.ndarray, reason: str = "periodic") -> None:
        """Queue one Re-ID-AR clip result: embedding float32 (D,), action_probs float32 (A,)."""
        self._put(("clip", dict(
            run_id=self.run_id, camera_id=camera_id, track_id=int(track_id), t_start=float(t_start),
            t_end=float(t_end), quality=float(quality), reason=reason,
            embedding=np.asarray(embedding, np.float32).tobytes(),
            action_probs=_probs_json(action_probs),
        )))

    def set_track_appearance(self, camera_id: str, track_id: int, embedding: np.ndarray, action_probs: np.ndarray,
                             n_clips: int) -> None:
        """Queue a track's running appearance: embedding float32 (D,) L2-normalised, latest action_probs (A,)."""
        emb = np.asarray(embedding, np.float32)
        self._put(("appearance", (camera_id, int(track_id)), dict(
            embedding=emb.tobytes(), embedding_dim=int(emb.size),
            action_probs=_probs_json(action_probs),
            n_clips=int(n_clips),
        )))

    def add_identity_link(self, camera_id: str, track_id: int, global_id: int, previous_id: int | None, ts: float,
                          reason: str, score: float | None = None, mode: str = "online") -> None:
        """Queue one identity link (history row; a re-link carries `previous_id`)."""
        self._put(("link", dict(
            run_id=self.run_id, camera_id=camera_id, track_id=int(track_id), global_id=int(global_id),
            previous_id=None if previous_id is None else int(previous_id), ts=float(ts), reason=reason,
            score=None if score is None else float(score), mode=mode,
        )))

    def set_identities(self, mode: str, rows: list[dict]) -> None:
        """Queue the final identity of tracks: rows of camera_id, track_id, global_id, first_ts, last_ts (upsert)."""
        self._put(("identities", [dict(run_id=self.run_id, mode=mode, **r) for r in rows]))

    def add_action_event(self, event) -> None:
        """Queue one finished action event (`pipeline.events.ActionEvent`); committed with the next batch."""
        self._put(("event", dict(
            run_id=self.run_id, camera_id=event.camera_id, track_id=int(event.track_id),
            global_id=None if event.global_id is None else int(event.global_id), action=event.action,
            source=event.source, start_ts=float(event.start_ts), end_ts=float(event.end_ts),
            start_frame=int(event.start_frame), end_frame=int(event.end_frame), peak_conf=float(event.peak_conf),
            mean_conf=float(event.mean_conf), clips=int(event.clips), frames=int(event.frames),
        )))

    def add_thumbnail(self, camera_id: str, track_id: int, jpeg: bytes, quality: float, width: int | None = None,
                      height: int | None = None, ts: float | None = None, frame: int | None = None) -> None:
        """Queue a track's thumbnail (JPEG bytes, width x height px, read from the JPEG when not given); it replaces
        the stored one only when `quality` (0..1) is higher, so the store keeps one row per track: its best view."""
        if not isinstance(jpeg, (bytes, bytearray)) or not jpeg:
            raise ValueError(f"thumbnail of {camera_id}:{track_id}: jpeg must be non-empty bytes")
        if width is None or height is None:
            import cv2

            image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise ValueError(f"thumbnail of {camera_id}:{track_id}: the bytes are not a JPEG image")
            height, width = image.shape[:2]
        self._put(("thumb", (camera_id, int(track_id)), dict(
            run_id=self.run_id, camera_id=camera_id, track_id=int(track_id), quality=float(quality),
            ts=None if ts is None else float(ts), frame=None if frame is None else int(frame),
            width=int(width), height=int(height), jpeg=bytes(jpeg),
        )))

    def add_ground_position(self, group: str, global_id: int, ts: float, x_m: float, y_m: float,
                            cameras: tuple[str, ...] = (), sigma_m: float | None = None) -> None:
        """Queue where a fused identity stood at ts (s, run clock): x_m, y_m metres in its group's ground frame,
        sigma_m how surely (metres, the least certain direction's standard deviation; None: unknown)."""
        self._put(("ground", dict(run_id=self.run_id, ground_group=str(group), global_id=int(global_id), ts=float(ts),
                                  x_m=float(x_m), y_m=float(y_m), cameras=" ".join(cameras),
                                  sigma_m=None if sigma_m is None else float(sigma_m))))

    def update_camera(self, camera_id: str, **values) -> None:
        """Queue new values for this run's camera row (frames, dropped, status, error, fps, width, height)."""
        self._put(("camera_update", camera_id, values))

    def flush(self, timeout: float = 60.0) -> None:
        """Block until everything queued so far is committed."""
        if not self._thread.is_alive():
            return
        done = threading.Event()
        self._queue.put(("flush", done))
        done.wait(timeout)
        self._raise_if_failed()

    def close(self, status: str = "completed") -> None:
        """Write everything queued, mark the run `status` and release the database. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        try:
            if self.run_id is not None and self.error is None:
                with self.engine.begin() as conn:
                    conn.execute(
                        update(schema.runs)
                        .where(schema.runs.c.id == self.run_id)
                        .values(ended_at=time.time(), status=status)
                    )
        except SQLAlchemyError as err:
            self._fail(err)
        finally:
            self.engine.dispose()
        self._raise_if_failed()

    # ---- writer thread ------------------------------------------------------------------------------------------
    def _put(self, item) -> None:
        self._raise_if_failed()
        if self._closed:
            raise StoreError("the store is closed")
        self._queue.put(item)

    def _raise_if_failed(self) -> None:
        if self.error:
            raise StoreError(self.error)

    def _guard(self):
        writer = self

        class _Guard:
            def __enter__(self):
                return self

            def __exit__(self, exc_type, exc, tb):
                if exc is not None and isinstance(exc, SQLAlchemyError):
                    writer._fail(exc)
                    raise StoreError(writer.error) from None
                return False

        return _Guard()

    def _fail(self, err: Exception) -> None:
        cause = str(getattr(err, "orig", err)).splitlines()[0]
        hint = "free disk space" if "full" in cause.lower() else "check permissions and free space"
        self.error = f"cannot write to database {redact_db_url(str(self.engine.url))}: {cause} ({hint})"
        log.debug(self.error)  # raised to the producer as StoreError, which reports it once

    def _loop(self) -> None:
        boxes: list[dict] = []
        clips: list[dict] = []
        links: list[dict] = []
        idents: list[dict] = []
        events: list[dict] = []
        ground: list[dict] = []
        thumbs: dict[tuple[str, int], dict] = {}
        run_values: dict = {}
        cameras: dict[str, dict] = {}
        waiters: list[threading.Event] = []
        last_commit = time.monotonic()
        stop = False
        while not stop:
            timeout = max(0.0, self.flush_interval_s - (time.monotonic() - last_commit))
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                stop = True
            elif item is not None:
                kind = item[0]
                if kind == "boxes":
                    boxes.extend(self._box_rows(item[1]))
                elif kind == "clip":
                    clips.append(item[1])
                elif kind == "link":
                    links.append(item[1])
                elif kind == "identities":
                    idents.extend(item[1])
                elif kind == "event":
                    events.append(item[1])
                elif kind == "ground":
                    ground.append(item[1])
                elif kind == "thumb":
                    if item[1] not in thumbs or thumbs[item[1]]["quality"] < item[2]["quality"]:
                        thumbs[item[1]] = item[2]
                elif kind == "appearance":
                    self._appearance[item[1]] = item[2]
                    self._dirty.add(item[1])
                elif kind == "run_update":
                    run_values.update(item[1])
                elif kind == "camera":
                    cameras[item[1]["camera_id"]] = item[1]
                elif kind == "camera_update":
                    cameras.setdefault(item[1], {"run_id": self.run_id, "camera_id": item[1]}).update(item[2])
                elif kind == "flush":
                    waiters.append(item[1])
            due = time.monotonic() - last_commit >= self.flush_interval_s
            if stop or waiters or due or len(boxes) + len(clips) + len(ground) >= self.batch_rows:
                if self.error is None and (boxes or clips or cameras or run_values or self._dirty or links or idents
                                           or events or thumbs or ground):
                    try:
                        self._commit(boxes, cameras, clips, run_values, links, idents, events, list(thumbs.values()),
                                     ground)
                    except SQLAlchemyError as err:
                        self._fail(err)
                    except OSError as err:
                        self._fail(err)
                boxes, clips, cameras, run_values, links, idents, events, thumbs = [], [], {}, {}, [], [], [], {}
                ground = []
                last_commit = time.monotonic()
                for w in waiters:
                    w.set()
                waiters = []

    def _box_rows(self, chunk: tuple) -> list[tuple]:
        """One frame's (camera, frame, ts, ids, boxes, scores) -> `track_boxes` row tuples (column order of
        `BOX_COLUMNS`); updates the track summaries."""
        camera_id, frame, ts, ids, xyxy, scores = chunk
        n, ids, cols = len(ids), ids.tolist(), np.asarray(xyxy).T.tolist()
        for tid in ids:
            key = (camera_id, tid)
            s = self._tracks.get(key)
            if s is None:
                self._tracks[key] = _TrackSummary(frame, frame, ts, ts, 1)
            else:
                s.last_frame, s.last_ts, s.n_boxes = frame, ts, s.n_boxes + 1
            self._dirty.add(key)
        return list(zip(repeat(self.run_id, n), repeat(camera_id, n), repeat(frame, n), repeat(ts, n), ids, *cols,
                        scores.tolist()))

    def _commit(self, boxes: list[dict], cameras: dict[str, dict], clips: list[dict] | None = None,
                run_values: dict | None = None, links: list[dict] | None = None,
                idents: list[dict] | None = None, events: list[dict] | None = None,
                thumbs: list[dict] | None = None, ground: list[dict] | None = None) -> None:
        track_rows = []
        for key in self._dirty:
            summary = self._tracks.get(key)
            if summary is None:  # appearance of a track whose boxes are not in yet: wait for them
                continue
            summary.__dict__.update(self._appearance.get(key, {}))
            track_rows.append(dict(run_id=self.run_id, camera_id=key[0], track_id=key[1], **vars(summary)))
        with self.engine.begin() as conn:
            if run_values:
                conn.execute(update(schema.runs).where(schema.runs.c.id == self.run_id).values(**run_values))
            for row in cameras.values():
                if "source" in row:
                    upsert(conn, schema.cameras, [row], ["run_id", "camera_id"])
                else:
                    values = {k: v for k, v in row.items() if k not in ("run_id", "camera_id")}
                    conn.execute(
                        update(schema.cameras)
                        .where(schema.cameras.c.run_id == self.run_id, schema.cameras.c.camera_id == row["camera_id"])
                        .values(**values)
                    )
            if boxes:
                insert_boxes(conn, boxes)
            if clips:
                conn.execute(schema.track_clips.insert(), clips)
            if links:
                conn.execute(schema.identity_links.insert(), links)
            if idents:
                upsert(conn, schema.identities, idents, ["run_id", "mode", "camera_id", "track_id"])
            if events:
                conn.execute(schema.action_events.insert(), events)
            upsert(conn, schema.tracks, track_rows, ["run_id", "camera_id", "track_id"])
            if thumbs:
                upsert_better(conn, schema.track_thumbnails, thumbs, ["run_id", "camera_id", "track_id"], "quality")
            if ground:
                conn.execute(schema.ground_positions.insert(), ground)
        self.rows_written += len(boxes)
        self._dirty.clear()  # appearance of a track with no boxes yet stays in _appearance until its boxes come
