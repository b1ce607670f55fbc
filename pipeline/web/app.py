"""The review web app (FastAPI): pages for runs, identities, one identity's timeline, events, the floor (fused runs)
and search by image, and the JSON API under `/api/...` they are built on (OpenAPI docs at `/docs`).

Pages are one static HTML page with plain JavaScript (`pipeline/web/static/`); every page has its own URL
(`/identities?run=2&sort=last_seen&page=3`, `/identity/7?run=2`, `/events?run=2&camera=c0`, `/floor?run=2&near=4,8`,
`/search?run=2`), so a link can be shared. Security: the store is opened read-only; with an access token set
(required by `serve` when it listens on anything but the loopback address) every request must carry it
(`Authorization: Bearer`, the `mcsa_token` cookie that `?token=` sets, or `?token=`); Host headers are checked
against the served names (DNS rebinding); an upload is limited in bytes (Content-Length checked before the body is
read) and pixels, and validated as an image; static files come from a fixed list, no request path reaches the file
system.
"""

from __future__ import annotations

import hmac
import logging
import threading
from pathlib import Path

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response

from core.geometry import RELIABLE_SIGMA_M
from pipeline.web.search import (IdentitySearch, QueryEncoder, SearchUnavailable, UploadError, UploadLimits,
                                 decode_upload)
from pipeline.web.store import NotFound, ReviewStore, StoreOpenError

log = logging.getLogger("mcsa.web")

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
TOKEN_COOKIE = "mcsa_token"
PAGES = ("/", "/runs", "/identities", "/events", "/floor", "/search")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def create_app(store: ReviewStore, token: str | None = None, allowed_hosts: list[str] | None = None,
               limits: UploadLimits = UploadLimits(), device: str = "cpu", cpu_threads: int | None = None,
               warm_up: bool = False) -> FastAPI:
    """The app on a read-only `ReviewStore`. token: required on every request when set; allowed_hosts: accepted
    Host header names (None: any); limits: upload limits; device / cpu_threads: where search embeds uploads;
    warm_up: build the latest run's Re-ID model in the background at start (the first search is then fast)."""
    app = FastAPI(title="mcsa review", version="1", docs_url="/docs", redoc_url=None,
                  description="Who was where, doing what: runs, cross-camera identities, action events, search by "
                              "image. Read-only on the event store.")
    encoder = QueryEncoder(device, cpu_threads)
    search = IdentitySearch(store)
    app.state.store, app.state.encoder, app.state.search = store, encoder, search
    hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if hosts is not None:
            host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]").lower()
            if host not in hosts:
                return _error(400, f"unexpected Host header {host!r}: open the app by the address `serve` printed")
        if token is not None:
            given = request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                msg = ("missing or wrong access token: open the URL `serve` printed (it ends in ?token=...) or send "
                       "'Authorization: Bearer <token>'")
                if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
                    return _error(401, msg)
                return HTMLResponse(f"<!doctype html><title>mcsa review: access token needed</title>"
                                    f"<h1>Access token needed</h1><p>{msg}</p>", status_code=401)
        if request.method == "POST" and request.url.path.endswith("/search"):
            length = request.headers.get("content-length")
            if length is None:
                return _error(411, "send the upload with a Content-Length header (a plain multipart form post)")
            if not length.isdigit() or int(length) > limits.max_bytes + 64 * 1024:
                return _error(413, f"the upload is larger than the {limits.max_bytes / 1e6:.0f} MB limit: upload a "
                                   "smaller crop of the person")
        response = await call_next(request)
        if token is not None and request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.exception_handler(NotFound)
    async def _not_found(_request, err):
        return _error(404, str(err))

    @app.exception_handler(SearchUnavailable)
    async def _unavailable(_request, err):
        return _error(409, str(err))

    @app.exception_handler(UploadError)
    async def _upload(_request, err):
        return _error(err.status, str(err))

    @app.exception_handler(StoreOpenError)
    async def _store(_request, err):
        return _error(503, str(err))

    @app.exception_handler(ValueError)
    async def _bad_value(_request, err):
        return _error(400, str(err))

    def run_id_of(run: str) -> int:
        if run == "latest":
            return store.latest_run()
        if not run.isdigit():
            raise ValueError(f"run {run!r}: give a run number or 'latest'")
        store.run(int(run))  # 404 when absent
        return int(run)

    # ---- pages ----------------------------------------------------------------------------------------------------
    index_html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")

    def page() -> HTMLResponse:
        return HTMLResponse(index_html, headers={"Cache-Control": "no-store"})

    for path in PAGES:
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False, response_class=HTMLResponse)

    @app.get("/identity/{label}", include_in_schema=False, response_class=HTMLResponse)
    def identity_page(label: str):
        return page()

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in STATIC_FILES:
            raise NotFound(f"no static file {name!r}")
        return Response((STATIC_DIR / name).read_bytes(), media_type=STATIC_FILES[name],
                        headers={"Cache-Control": "no-cache"})

    # ---- API ------------------------------------------------------------------------------------------------------
    @app.get("/api/runs", summary="All runs, newest first: status, start/end (unix s), cameras, frames")
    def api_runs():
        return store.runs()

    @app.get("/api/runs/{run}", summary="One run ('latest' or its number) and its cameras: status, frames, fps, "
                                        "size, dropped frames, tracks, error; floor positions with a larger sigma "
                                        "(m) than reliable_sigma_m are approximate")
    def api_run(run: str):
        run_id = run_id_of(run)
        return dict(store.run(run_id), cameras=store.cameras(run_id), reliable_sigma_m=RELIABLE_SIGMA_M)

    @app.get("/api/runs/{run}/identities", summary="Identity cards, sorted and paginated")
    def api_identities(run: str, sort: str = "first_seen", page: int = Query(1, ge=1),
                       per_page: int = Query(48, ge=1, le=500), camera: str | None = None,
                       min_cameras: int = Query(1, ge=1)):
        return store.identities_page(run_id_of(run), sort, page, per_page, camera, min_cameras)

    @app.get("/api/runs/{run}/identities/{label}", summary="One identity: tracks per camera, action episodes, "
                                                           "link history, thumbnails")
    def api_identity(run: str, label: str):
        return store.identity(run_id_of(run), label)

    @app.get("/api/runs/{run}/events", summary="Action events, filtered by camera, action, identity, time window")
    def api_events(run: str, camera: str | None = None, action: str | None = None, identity: str | None = None,
                   since: float | None = None, until: float | None = None, page: int = Query(1, ge=1),
                   per_page: int = Query(100, ge=1, le=1000)):
        return store.events(run_id_of(run), camera, action, identity, since, until, page, per_page)

    @app.get("/api/runs/{run}/floor", summary="The run on the floor (fused runs): every placed identity's path, "
                                              "metres walked; with near=X,Y who came within radius m and when")
    def api_floor(run: str, since: float | None = None, until: float | None = None, near: str | None = None,
                  radius: float = Query(1.0, gt=0, le=1000)):
        point = None
        if near is not None:
            try:
                point = tuple(float(v) for v in near.split(","))
            except ValueError:
                point = ()
            if len(point) != 2 or not all(np.isfinite(point)):
                raise ValueError(f"near={near!r}: give a floor point X,Y in metres, e.g. near=4.5,8")
        return store.floor(run_id_of(run), since, until, point, radius)

    @app.get("/api/runs/{run}/thumbnails/{camera_id}/{track_id}.jpg", summary="A track's best-view JPEG",
             response_class=Response)
    def api_thumbnail(run: str, camera_id: str, track_id: int):
        jpeg = store.thumbnail(run_id_of(run), camera_id, track_id)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})

    def _results(run_id: int, ranked: list[dict]) -> list[dict]:
        idx = store.index(run_id)
        out = []
        for rank, r in enumerate(ranked, 1):
            ident = idx.identities.get(r["label"])
            out.append(dict(r, rank=rank, card=ident.card() if ident is not None else None))
        return out

    @app.post("/api/runs/{run}/search", summary="Search by image: upload a person crop (multipart field `image`)")
    def api_search(run: str, image: UploadFile | None = File(None), top: int = Query(10, ge=1, le=100),
                   exclude_camera: str | None = None):
        run_id = run_id_of(run)
        if image is None:
            raise UploadError(400, "no image: send the person crop as the multipart form field 'image'")
        data = image.file.read(limits.max_bytes + 1)
        picture = decode_upload(data, limits)
        query = encoder.embed(store.run_config(run_id), picture)
        return dict(run_id=run_id, results=_results(run_id, search.rank(run_id, query, top, exclude_camera)))

    @app.get("/api/runs/{run}/similar", summary="Identities similar to one track, by its stored embedding")
    def api_similar(run: str, camera: str, track: int, top: int = Query(10, ge=1, le=100)):
        run_id = run_id_of(run)
        query = store.track_embedding(run_id, camera, track)
        return dict(run_id=run_id, query=dict(camera_id=camera, track_id=track),
                    results=_results(run_id, search.rank(run_id, query, top)))

    if warm_up:
        def _warm():
            try:
                run_id = store.latest_run()
                store.index(run_id)
                encoder.encoder_for(store.run_config(run_id))
                search.warm(run_id)
            except Exception as err:  # noqa: BLE001 - the first search will report it
                log.info("search warm-up skipped: %s", str(err).splitlines()[0])
        threading.Thread(target=_warm, name="search-warm-up", daemon=True).start()
    return app
