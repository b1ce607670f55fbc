"""Review app benchmarks (run by hand; prints two tables).

1. Latency on a large store: a synthetic run of `--tracks` tracks (default 10^5) in `--identities` global identities
   (default 10^4), written through the real `StoreWriter` (boxes, 512-d track embeddings, offline identities, action
   events, one JPEG thumbnail per track), served by the real app in process (FastAPI TestClient, read-only store):
   p50 / p95 / max of the identities page (random sort and page), one identity's timeline (random identity), search
   by image (a real person crop uploaded, embedded by the run's Re-ID model on this CPU, faiss over all track
   embeddings) and "similar" (a stored embedding). Goals: pages < 300 ms p95, search < 500 ms p95, model included.
2. EPFL Terrace, both cameras, 1500 frames: for each ground-truth person seen by both cameras, a crop from camera c0
   (a large box, fully visible, not overlapping anyone) is uploaded; the person's identity is the global identity
   that holds most of their matched boxes (IoU >= 0.5) over both cameras. Reported: the rank of that identity
   (all tracks; and with c0's tracks left out, i.e. found in c1 only). Goal: rank 1 for >= 4 of the 5 people.

    python3 bench/web.py                                  # both; runs Terrace with thumbnails into /tmp/mcsa_web_bench
    python3 bench/web.py --terrace-out out_terrace        # reuse a finished Terrace run (its events.db)
    python3 bench/web.py --skip-terrace --tracks 100000 --identities 10000 --requests 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.paths import shared_dir  # noqa: E402
from core.types import Tracks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def build_synthetic_store(path: Path, n_tracks: int, n_identities: int, crop_png: bytes, seed: int = 0) -> None:
    """A run of n_tracks tracks over 2..8 cameras and 1 h, grouped in n_identities identities, through StoreWriter."""
    from pipeline.config import load_config
    from pipeline.events.hysteresis import ActionEvent
    from pipeline.store import StoreWriter, open_engine
    from pipeline.store.schema import sqlite_url
    from pipeline.web.thumbnails import encode_jpeg

    rng = np.random.default_rng(seed)
    cfg = load_config(REPO / "configs" / "epfl_terrace.yaml").model_dump(mode="json")
    writer = StoreWriter(open_engine(sqlite_url(path)), batch_rows=20000, flush_interval_s=2.0)
    writer.begin_run(cfg, str(path.parent))
    writer.set_action_names([])
    cams = [f"cam{k}" for k in range(8)]
    for cam in cams:
        writer.register_camera(cam, f"{cam}.mp4", 25.0, 1920, 1080)
    centres = rng.normal(size=(n_identities, 512)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    crop = cv2.imdecode(np.frombuffer(crop_png, np.uint8), cv2.IMREAD_COLOR)
    thumb = encode_jpeg(cv2.resize(crop, (max(8, round(128 * crop.shape[1] / crop.shape[0])), 128)))
    identity_of = rng.integers(0, n_identities, n_tracks)
    rows, next_id = [], {c: 0 for c in cams}
    box = np.array([[100, 100, 160, 280]], np.float32)
    for k in range(n_tracks):
        cam = cams[k % len(cams)]
        tid = next_id[cam] = next_id[cam] + 1
        t0 = float(rng.uniform(0, 3600))
        dur = float(rng.uniform(2, 30))
        frames = (int(t0 * 25), int((t0 + dur) * 25))
        for f, t in ((frames[0], t0), (frames[1], t0 + dur)):
            writer.add_tracks(cam, f, t, Tracks(np.array([tid]), box, np.ones(1), np.zeros(1)))
        emb = centres[identity_of[k]] + 0.35 * rng.normal(size=512).astype(np.float32) / np.sqrt(512)
        writer.set_track_appearance(cam, tid, emb / np.linalg.norm(emb), np.zeros(0, np.float32), 3)
        writer.add_thumbnail(cam, tid, thumb, float(rng.uniform(0.3, 1.0)), ts=t0, frame=frames[0])
        rows.append(dict(camera_id=cam, track_id=tid, global_id=int(identity_of[k]) + 1, first_ts=t0,
                         last_ts=t0 + dur))
        if k % 5 == 0:
            action = ("walking", "standing", "running")[k % 3]
            writer.add_action_event(ActionEvent(cam, tid, int(identity_of[k]) + 1, action, "motion", t0, t0 + dur / 2,
                                                frames[0], frames[0] + 10, 0.9, 0.8, 0, 10))
        if len(rows) == 5000:
            writer.set_identities("offline", rows)
            rows = []
            writer.flush(600)
    writer.set_identities("offline", rows)
    writer.close("completed")


def latency_table(db_dir: Path, crop_png: bytes, n_requests: int, n_tracks: int, seed: int = 1) -> list[tuple]:
    from fastapi.testclient import TestClient

    from pipeline.web.app import create_app
    from pipeline.web.store import ReviewStore, open_readonly

    rng = np.random.default_rng(seed)
    store = ReviewStore(open_readonly(db_dir))
    client = TestClient(create_app(store))
    out = []

    def timed(name, fn, n=n_requests):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            r = fn()
            times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, (name, r.status_code, r.text[:200])
        out.append((name, n, statistics.median(times), _pct(times, 0.95), max(times)))

    t = time.perf_counter()
    first = client.get("/api/runs/latest/identities")
    cold_index = (time.perf_counter() - t) * 1000
    total = first.json()["total"]
    t = time.perf_counter()
    client.post("/api/runs/latest/search", files={"image": ("q.png", crop_png, "image/png")})
    cold_search = (time.perf_counter() - t) * 1000
    sorts = ["first_seen", "last_seen", "time_on_camera", "cameras", "tracks", "identity"]
    pages = max(1, total // 48)
    labels = [c["label"] for c in client.get("/api/runs/latest/identities", params=dict(per_page=500)).json()["items"]]
    timed("identities page (48 cards, random sort/page)", lambda: client.get(
        "/api/runs/latest/identities",
        params=dict(sort=sorts[rng.integers(len(sorts))], page=int(rng.integers(1, pages + 1)))))
    timed("identity timeline (random identity)", lambda: client.get(
        f"/api/runs/latest/identities/{labels[rng.integers(len(labels))]}"))
    timed("events page (100 rows, one camera)", lambda: client.get(
        "/api/runs/latest/events", params=dict(camera=f"cam{rng.integers(8)}", page=int(rng.integers(1, 20)))))
    timed("search by image (upload, model + faiss)", lambda: client.post(
        "/api/runs/latest/search", files={"image": ("q.png", crop_png, "image/png")}))
    timed("similar (stored embedding + faiss)", lambda: client.get(
        "/api/runs/latest/similar", params=dict(camera="cam0", track=int(rng.integers(1, n_tracks // 8 + 1)))))
    store.close()
    return out, cold_index, cold_search, total


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (N, 4) and b (M, 4), xyxy -> (N, M)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def load_gt(path: Path) -> dict[int, list[tuple[int, np.ndarray, float]]]:
    """MOT gt -> {0-based frame: [(person, xyxy, visibility)]}."""
    out: dict[int, list] = {}
    for row in np.loadtxt(path, delimiter=","):
        f, pid, x, y, w, h = int(row[0]) - 1, int(row[1]), *row[2:6]
        vis = float(row[8]) if len(row) > 8 else 1.0
        out.setdefault(f, []).append((pid, np.array([x, y, x + w, y + h], np.float32), vis))
    return out


def terrace_table(out_dir: Path) -> list[dict]:
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from pipeline.store import schema
    from pipeline.web.app import create_app
    from pipeline.web.store import ReviewStore, open_readonly

    data = shared_dir() / "data" / "epfl_terrace1"
    store = ReviewStore(open_readonly(out_dir))
    run_id = store.latest_run()
    idx = store.index(run_id)
    client = TestClient(create_app(store))
    gts = {cam: load_gt(data / f"gt_{cam}" / "gt.txt") for cam in ("c0", "c1")}
    b = schema.track_boxes.c
    votes: dict[int, dict[str, int]] = {}
    for cam in ("c0", "c1"):
        pred: dict[int, list] = {}
        with store.engine.connect() as conn:
            for f, tid, x1, y1, x2, y2 in conn.execute(select(b.frame, b.track_id, b.x1, b.y1, b.x2, b.y2)
                                                       .where(b.run_id == run_id, b.camera_id == cam)):
                pred.setdefault(int(f), []).append((int(tid), (x1, y1, x2, y2)))
        for f, people in gts[cam].items():
            if f not in pred:
                continue
            m = iou(np.stack([p[1] for p in people]), np.array([p[1] for p in pred[f]], np.float32))
            for i, (pid, _, _) in enumerate(people):
                j = int(m[i].argmax())
                if m[i, j] >= 0.5:
                    label = idx.tracks[(cam, pred[f][j][0])].label
                    votes.setdefault(pid, {}).setdefault(label, 0)
                    votes[pid][label] += 1
    both = sorted(set(p for fr in gts["c0"].values() for p, _, _ in fr) & set(p for fr in gts["c1"].values()
                                                                              for p, _, _ in fr))
    rows = []
    for pid in both:
        # the crop: a fully visible, large c0 box overlapping nobody, from the middle of such frames
        good = []
        for f, people in sorted(gts["c0"].items()):
            mine = [p for p in people if p[0] == pid]
            if not mine or mine[0][2] < 1:
                continue
            box = mine[0][1]
            others = [p[1] for p in people if p[0] != pid]
            if others and iou(box[None], np.stack(others)).max() > 0.0:
                continue
            if box[0] < 2 or box[1] < 2 or box[2] > 358 or box[3] > 286:
                continue
            good.append((float(box[3] - box[1]), f, box))
        good.sort(key=lambda g: g[0])
        _, frame, box = good[int(len(good) * 0.75)] if good else (0, None, None)
        truth = max(votes.get(pid, {"-": 0}).items(), key=lambda kv: kv[1])[0]
        row = dict(person=pid, frame=frame, identity=truth, votes=votes.get(pid, {}))
        if frame is None:
            rows.append(dict(row, rank=None, rank_c1=None, top="-", top_score=None))
            continue
        cap = cv2.VideoCapture(str(data / "terrace1-c0.mp4"))
        cap.set(cv2.CAP_PROP_POS_FRAMES, frame)
        ok, image = cap.read()
        cap.release()
        x1, y1, x2, y2 = [int(round(v)) for v in box]
        png = cv2.imencode(".png", image[max(y1, 0):y2, max(x1, 0):x2])[1].tobytes()
        for key, params in (("rank", {}), ("rank_c1", {"exclude_camera": "c0"})):
            res = client.post("/api/runs/latest/search", params=dict(top=100, **params),
                              files={"image": ("q.png", png, "image/png")}).json()["results"]
            labels = [r["label"] for r in res]
            row[key] = labels.index(truth) + 1 if truth in labels else None
            if key == "rank":
                row["top"], row["top_score"] = labels[0], res[0]["score"]
                row["truth_score"] = res[labels.index(truth)]["score"] if truth in labels else None
        rows.append(row)
    store.close()
    return rows


def main() -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/mcsa_web_bench", help="folder for the synthetic store and Terrace run")
    p.add_argument("--terrace-out", help="a finished Terrace run (its events.db) instead of running it")
    p.add_argument("--skip-terrace", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--tracks", type=int, default=100_000)
    p.add_argument("--identities", type=int, default=10_000)
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--threads", type=int, default=2, help="torch / OpenVINO threads (2 = this machine's cores)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(1)  # as `serve` does (--search-threads 1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    terrace = Path(args.terrace_out) if args.terrace_out else work / "terrace"
    if not args.skip_terrace and not (terrace / "events.db").is_file():
        from pipeline.config import load_config
        from pipeline.runner import Pipeline

        cfg = load_config(REPO / "configs" / "epfl_terrace.yaml")
        cfg.run.progress = False
        print(f"running Terrace (both cameras, 1500 frames) with thumbnails into {terrace} ...", flush=True)
        print(Pipeline(cfg, terrace).run().table())
    if not args.skip_latency:
        # a real person crop (Terrace c0, frame 1000) for the uploads
        cap = cv2.VideoCapture(str(shared_dir() / "data" / "epfl_terrace1" / "terrace1-c0.mp4"))
        cap.set(cv2.CAP_PROP_POS_FRAMES, 1000)
        _, frame = cap.read()
        cap.release()
        gt = load_gt(shared_dir() / "data" / "epfl_terrace1" / "gt_c0" / "gt.txt")[1000]
        x1, y1, x2, y2 = [int(v) for v in max(gt, key=lambda g: g[1][3] - g[1][1])[1]]
        crop_png = cv2.imencode(".png", frame[max(y1, 0):y2, max(x1, 0):x2])[1].tobytes()
        syn = work / f"synthetic_{args.tracks}_{args.identities}"
        if not (syn / "events.db").is_file():
            syn.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            build_synthetic_store(syn / "events.db", args.tracks, args.identities, crop_png)
            print(f"synthetic store: {args.tracks} tracks, {args.identities} identities written in "
                  f"{time.perf_counter() - t:.0f} s ({(syn / 'events.db').stat().st_size / 1e6:.0f} MB)")
        rows, cold_index, cold_search, total = latency_table(syn, crop_png, args.requests, args.tracks)
        print(f"\nLatency on {args.tracks} tracks / {total} identities, {args.requests} requests each, "
              f"{args.threads} threads (first request builds the index: {cold_index:.0f} ms; first search loads "
              f"the model and the embeddings: {cold_search:.0f} ms)")
        print(f"{'request':<48} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'goal':>8}")
        for name, n, p50, p95, mx in rows:
            goal = 500 if "search" in name or "similar" in name else 300
            print(f"{name:<48} {n:>4} {p50:>8.1f} {p95:>8.1f} {mx:>8.1f} {'<' + str(goal):>8} "
                  f"{'ok' if p95 < goal else 'MISSED'}")
    if not args.skip_terrace:
        rows = terrace_table(terrace)
        print(f"\nTerrace search by image (crop from c0; identity = the global id holding most of the person's "
              f"boxes), store {terrace / 'events.db'}")
        print(f"{'person':>6} {'c0 frame':>8} {'identity':>8} {'rank':>5} {'rank c1 only':>12} {'top':>6} "
              f"{'top score':>9} {'its score':>9}  boxes per identity")
        for r in rows:
            print(f"{r['person']:>6} {r['frame'] if r['frame'] is not None else '-':>8} {r['identity']:>8} "
                  f"{r['rank'] if r['rank'] else '-':>5} {r['rank_c1'] if r['rank_c1'] else '-':>12} {r['top']:>6} "
                  f"{r['top_score'] if r['top_score'] is not None else float('nan'):>9.3f} "
                  f"{r.get('truth_score') if r.get('truth_score') is not None else float('nan'):>9.3f}  "
                  f"{json.dumps(dict(sorted(r['votes'].items(), key=lambda kv: -kv[1])[:4]))}")
        first = sum(1 for r in rows if r["rank"] == 1)
        first_c1 = sum(1 for r in rows if r["rank_c1"] == 1)
        print(f"ranked first: {first} of {len(rows)} people (goal >= 4 of 5); with c0 left out: {first_c1} of "
              f"{len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
