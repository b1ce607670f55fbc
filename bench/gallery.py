"""Gallery search benchmark: exact (flat) vs approximate (IVF, HNSW) faiss indexes on clustered synthetic embeddings.

Galleries of N identities (one L2-normalised D-dim prototype each) drawn around N/100 cluster centres (people who look
alike); a query is a noisy view of a random identity. Reports per-query latency p50 / p99 (one query per call, as the
online associator searches), recall@k of the approximate index against the exact one, the index's memory (serialized
size) and its build time. Defaults keep the run to a few minutes on 2 CPU cores (HNSW is built only up to 10^5:
building it for 10^6 x 512-d takes far longer; pass --hnsw-max 1000000 to include it).

    python bench/gallery.py                     # 10^4, 10^5, 10^6; 512-d; flat + ivf (+ hnsw <= 10^5)
    python bench/gallery.py --sizes 10000 --queries 2000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.association.gallery import VectorIndex  # noqa: E402


def clustered(n: int, dim: int, rng: np.random.Generator, spread: float = 0.6) -> np.ndarray:
    """(n, dim) float32 unit vectors around n/100 random unit centres."""
    centres = rng.standard_normal((max(n // 100, 1), dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for s in range(0, n, step):
        m = min(step, n - s)
        x = centres[rng.integers(0, len(centres), m)] + rng.standard_normal((m, dim), dtype=np.float32) * (
            spread / np.sqrt(dim))
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def queries_of(gallery: np.ndarray, q: int, rng: np.random.Generator, noise: float = 0.5) -> np.ndarray:
    idx = rng.integers(0, len(gallery), q)
    x = gallery[idx] + rng.standard_normal((q, gallery.shape[1]), dtype=np.float32) * (noise / np.sqrt(gallery.shape[1]))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed_search(index: VectorIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    lat = np.empty(len(queries))
    ids = np.empty((len(queries), k), np.int64)
    for i, q in enumerate(queries):
        t = time.perf_counter()
        _, ids[i] = index.search(q[None], k)
        lat[i] = time.perf_counter() - t
    return lat * 1000, ids


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000, help="queries per size (fewer at 10^6, see --queries-1m)")
    ap.add_argument("--queries-1m", type=int, default=300, help="queries at sizes >= 10^6 (exact search is slow)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--ef-search", type=int, default=64)
    ap.add_argument("--hnsw-max", type=int, default=100_000, help="largest gallery the HNSW index is built for")
    ap.add_argument("--threads", type=int, default=1, help="faiss threads (1: single queries do not gain from more)")
    args = ap.parse_args()
    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    head = (f"{'N':>9} {'index':<22} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} {'recall@' + str(args.k):>10} "
            f"{'memory MB':>10}")
    print(head)
    print("-" * len(head), flush=True)
    for n in args.sizes:
        data = clustered(n, args.dim, rng)
        q = queries_of(data, args.queries_1m if n >= 1_000_000 else args.queries, rng)
        ids = np.arange(n, dtype=np.int64)
        nlist = int(2 * np.sqrt(n)) if n >= 10_000 else 64
        kinds = [("flat", {}), ("ivf", dict(nlist=nlist, nprobe=args.nprobe, train_size=n))]
        if n <= args.hnsw_max:
            kinds.append(("hnsw", dict(hnsw_m=32, ef_search=args.ef_search)))
        exact_ids = None
        for kind, opts in kinds:
            t = time.perf_counter()
            index = VectorIndex(args.dim, kind, **opts)
            index.add(ids, data)
            build = time.perf_counter() - t
            lat, found = timed_search(index, q, args.k)
            if kind == "flat":
                exact_ids = found
            label = kind + (f" nlist={nlist} nprobe={args.nprobe}" if kind == "ivf" else
                            f" M=32 ef={args.ef_search}" if kind == "hnsw" else " (exact)")
            print(f"{n:>9} {label:<22} {build:>8.1f} {np.percentile(lat, 50):>8.3f} {np.percentile(lat, 99):>8.3f} "
                  f"{recall(found, exact_ids):>10.3f} {index.memory_bytes() / 2**20:>10.1f}", flush=True)
            del index
        del data
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
