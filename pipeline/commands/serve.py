"""`serve`: the review web app on a run's store - who was where, doing what, and search by image.

    python run_pipeline.py serve --output DIR            # DIR/events.db, http://127.0.0.1:8765/
    python run_pipeline.py serve --store postgresql+psycopg://user@host/db --host 0.0.0.0 --token SECRET
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import sys

ORDER = 35

EPILOG = """\
pages: /runs (cameras: status, frames, fps, drops), /identities (cards, sortable, paginated), /identity/<id>
(timeline across cameras, thumbnails, link history, events), /events (filterable), /search (upload a person crop);
JSON API under /api (OpenAPI docs at /docs).

security: binds to 127.0.0.1 unless --host says otherwise; on any other address an access token is required
(--token, else $MCSA_WEB_TOKEN, else a random one is made and printed in the URL). The store is opened read-only.

exit codes: 0 stopped, 2 bad arguments or no such store
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="review web app: identities, timelines across cameras, events, search by image (read-only)",
        description="Serve a browser app on the event store of a run (finished or still running).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--output", "-o", metavar="DIR", default="out", help="run folder holding events.db (default out)")
    p.add_argument("--store", metavar="URL", help="store URL instead of DIR/events.db (SQLite or PostgreSQL)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--token", help="access token every request must carry (default $MCSA_WEB_TOKEN; required, and "
                                   "generated when absent, on a non-loopback --host)")
    p.add_argument("--device", default="cpu", help="where search embeds uploads: cpu (default), cuda, auto")
    p.add_argument("--search-threads", type=int, default=1,
                   help="faiss threads per search (default 1: one query is memory-bound; requests run in parallel)")
    p.add_argument("--max-upload-mb", type=float, default=8.0, help="largest accepted upload (default 8 MB)")
    p.set_defaults(func=main)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def main(args: argparse.Namespace) -> int:
    from pipeline.store.schema import redact_db_url
    from pipeline.web.search import UploadLimits
    from pipeline.web.store import ReviewStore, StoreOpenError, open_readonly

    if not 0 < args.port < 65536:
        print(f"error: --port {args.port} is not a TCP port (1..65535)", file=sys.stderr)
        return 2
    if args.max_upload_mb <= 0:
        print("error: --max-upload-mb must be > 0", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("MCSA_WEB_TOKEN") or None
    loopback = is_loopback(args.host)
    if not loopback and token is None:
        token = secrets.token_urlsafe(24)
    try:
        engine = open_readonly(args.output, args.store)
    except StoreOpenError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import faiss
    import uvicorn

    faiss.omp_set_num_threads(max(1, args.search_threads))

    from pipeline.web.app import create_app

    allowed = None if not loopback else ["127.0.0.1", "localhost", "::1"]
    app = create_app(ReviewStore(engine), token=token, allowed_hosts=allowed,
                     limits=UploadLimits(max_bytes=int(args.max_upload_mb * 1024 * 1024)), device=args.device,
                     warm_up=True)
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{shown_host if ':' not in shown_host else '[' + shown_host + ']'}:{args.port}/identities"
    print(f"mcsa review: {url}{'?token=' + token if token else ''}   (read-only on {redact_db_url(args.store) if args.store else args.output + '/events.db'}; Ctrl-C stops)", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        engine.dispose()
    return 0
