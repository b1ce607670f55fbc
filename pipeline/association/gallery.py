"""`Gallery`: global identities and their prototype embeddings, searchable with faiss.

Every identity holds up to one prototype per camera (the L2-normalised mean of its tracks' embeddings there), its
first/last-seen time (s, the run's clock) and last camera. Prototypes live in a faiss index searched by inner product
(= cosine on L2-normalised vectors). `VectorIndex` hides the index kind:

- `flat`: exact (`IndexFlatIP` under an id map); search cost grows linearly with the gallery.
- `ivf`: inverted lists (`IndexIVFFlat`, `nlist` lists, `nprobe` probed); trained on the gallery's own vectors once it
  holds `train_size` of them (exact until then).
- `hnsw`: graph index (`IndexHNSWFlat`, `hnsw_m` links, `ef_search`); faiss cannot remove from it, so removed ids are
  tombstoned, filtered out of results and the index is rebuilt when a quarter of it is dead.

Ageing: `prune(now)` drops identities unseen for `max_age_s` and the oldest beyond `max_identities`, so memory stays
bounded on 24/7 streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import faiss
import numpy as np

INDEX_KINDS = ("flat", "ivf", "hnsw")


def _as_rows(x: np.ndarray, dim: int) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, np.float32).reshape(-1, dim))


class VectorIndex:
    """Inner-product index of (id, vector) pairs with add / remove / top-k search, whatever the faiss kind."""

    def __init__(self, dim: int, kind: str = "flat", nlist: int = 1024, nprobe: int = 16, hnsw_m: int = 32,
                 ef_search: int = 64, ef_construction: int = 80, train_size: int | None = None) -> None:
        if kind not in INDEX_KINDS:
            raise ValueError(f"index kind {kind!r}: expected one of {', '.join(INDEX_KINDS)}")
        self.dim, self.kind = dim, kind
        self.nlist, self.nprobe = nlist, nprobe
        self.hnsw_m, self.ef_search, self.ef_construction = hnsw_m, ef_search, ef_construction
        self.train_size = train_size if train_size is not None else 39 * nlist
        self._dead: set[int] = set()
        self._index = self._new_flat() if kind != "hnsw" else self._new_hnsw()
        self.trained = kind != "ivf"

    # ---- construction -------------------------------------------------------------------------------------------
    def _new_flat(self):
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _new_hnsw(self):
        inner = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = self.ef_construction
        inner.hnsw.efSearch = self.ef_search
        return faiss.IndexIDMap2(inner)

    def _train_ivf(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors
        if len(vectors) > 64 * self.nlist:
            sample = vectors[np.random.default_rng(0).choice(len(vectors), 64 * self.nlist, replace=False)]
        ivf.train(sample)
        ivf.nprobe = self.nprobe
        ivf.add_with_ids(vectors, ids)
        self._index, self.trained = ivf, True

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal) - len(self._dead)

    def _all(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) held by the id-mapped flat/HNSW index, tombstones included."""
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        vecs = self._index.index.reconstruct_n(0, self._index.ntotal) if len(ids) else np.zeros((0, self.dim), np.float32)
        return ids, vecs

    # ---- updates ------------------------------------------------------------------------------------------------
    def add(self, ids, vectors) -> None:
        ids = np.asarray(ids, np.int64).ravel()
        vectors = _as_rows(vectors, self.dim)
        if len(ids) == 0:
            return
        if self.kind == "hnsw" and self._dead:
            self.remove(ids)  # a re-added id must not come back twice
        self._index.add_with_ids(vectors, ids)
        if self.kind == "ivf" and not self.trained and self._index.ntotal >= self.train_size:
            all_ids, all_vecs = self._all()
            self._train_ivf(all_vecs, all_ids)

    def remove(self, ids) -> None:
        ids = np.asarray(ids, np.int64).ravel()
        if len(ids) == 0:
            return
        if self.kind == "hnsw":
            self._dead.update(int(i) for i in ids)
            if len(self._dead) > 0.25 * max(self._index.ntotal, 1):
                self._rebuild_hnsw()
        else:
            self._index.remove_ids(faiss.IDSelectorBatch(ids))

    def _rebuild_hnsw(self) -> None:
        ids, vecs = self._all()
        keep = np.array([int(i) not in self._dead for i in ids], bool)
        self._index, self._dead = self._new_hnsw(), set()
        if keep.any():
            self._index.add_with_ids(vecs[keep], ids[keep])

    # ---- search -------------------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (similarities (Q, k) float32, ids (Q, k) int64; id -1 where fewer than k) by inner product."""
        q = _as_rows(queries, self.dim)
        if self._index.ntotal == 0 or k <= 0:
            return np.full((len(q), max(k, 0)), -np.inf, np.float32), np.full((len(q), max(k, 0)), -1, np.int64)
        extra = min(len(self._dead), 4 * k) if self._dead else 0
        sims, ids = self._index.search(q, k + extra)
        if extra:
            dead = np.isin(ids, np.fromiter(self._dead, np.int64))
            sims, ids = np.where(dead, -np.inf, sims), np.where(dead, -1, ids)
            order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            sims, ids = np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)
        return sims, ids

    def memory_bytes(self) -> int:
        """Serialized size of the index (a close proxy of its memory)."""
        return int(faiss.serialize_index(self._index).nbytes)


@dataclass
class Identity:
    """One global identity: prototypes per camera (L2-normalised (D,)), first/last seen time (s), last camera."""

    global_id: int
    first_t: float
    last_t: float
    last_camera: str
    prototypes: dict[str, np.ndarray] = field(default_factory=dict)
    proto_ids: dict[str, int] = field(default_factory=dict)  # camera -> id of its prototype in the index


class Gallery:
    """Global identities with per-camera prototypes in a faiss index; ageing and pruning keep it bounded."""

    def __init__(self, dim: int | None = None, kind: str = "flat", max_age_s: float | None = 3600.0,
                 max_identities: int | None = 100_000, **index_options) -> None:
        if kind not in INDEX_KINDS:
            raise ValueError(f"index kind {kind!r}: expected one of {', '.join(INDEX_KINDS)}")
        self.dim, self.kind, self._index_options = dim, kind, index_options
        self.index: VectorIndex | None = VectorIndex(dim, kind, **index_options) if dim else None
        self.max_age_s, self.max_identities = max_age_s, max_identities
        self.identities: dict[int, Identity] = {}
        self._owner: dict[int, int] = {}  # prototype id -> global id
        self._next_gid = 1
        self._next_proto = 0

    def __len__(self) -> int:
        return len(self.identities)

    def new_identity(self, t: float, camera_id: str) -> Identity:
        ident = Identity(self._next_gid, t, t, camera_id)
        self.identities[ident.global_id] = ident
        self._next_gid += 1
        return ident

    def touch(self, global_id: int, t: float, camera_id: str) -> None:
        ident = self.identities.get(global_id)
        if ident is not None and t >= ident.last_t:
            ident.last_t, ident.last_camera = t, camera_id

    def set_prototype(self, global_id: int, camera_id: str, embedding: np.ndarray | None) -> None:
        """Replace (or with None remove) the identity's prototype for this camera."""
        ident = self.identities[global_id]
        old = ident.proto_ids.pop(camera_id, None)
        ident.prototypes.pop(camera_id, None)
        if old is not None:
            self.index.remove([old])
            self._owner.pop(old, None)
        if embedding is None:
            return
        e = np.asarray(embedding, np.float32).ravel()
        n = float(np.linalg.norm(e))
        if n == 0 or not np.isfinite(n):
            return
        e = e / n
        if self.index is None:  # the embedding size is known from the first prototype
            self.dim = e.size
            self.index = VectorIndex(e.size, self.kind, **self._index_options)
        pid = self._next_proto
        self._next_proto += 1
        self.index.add([pid], e[None])
        ident.prototypes[camera_id], ident.proto_ids[camera_id] = e, pid
        self._owner[pid] = global_id

    def remove(self, global_id: int) -> None:
        ident = self.identities.pop(global_id, None)
        if ident is None:
            return
        ids = list(ident.proto_ids.values())
        if ids:
            self.index.remove(ids)
        for pid in ids:
            self._owner.pop(pid, None)

    def search(self, embedding: np.ndarray, k: int) -> dict[int, float]:
        """The identities of the top-k prototypes nearest to `embedding` (D,): global id -> best cosine."""
        if self.index is None:
            return {}
        sims, pids = self.index.search(np.asarray(embedding, np.float32)[None], k)
        out: dict[int, float] = {}
        for s, pid in zip(sims[0].tolist(), pids[0].tolist()):
            gid = self._owner.get(pid)
            if gid is not None and s > out.get(gid, -np.inf):
                out[gid] = float(s)
        return out

    def prune(self, now_t: float, keep: set[int] | None = None) -> list[int]:
        """Drop identities unseen for `max_age_s`, then the least recently seen beyond `max_identities` (never those
        in `keep`, e.g. identities with a live track); returns the dropped ids."""
        keep = keep or set()
        dropped = []
        if self.max_age_s is not None:
            dropped = [g for g, i in self.identities.items() if g not in keep and now_t - i.last_t > self.max_age_s]
        excess = len(self.identities) - len(dropped) - (self.max_identities or len(self.identities))
        if excess > 0:
            gone = set(dropped)
            oldest = sorted((i.last_t, g) for g, i in self.identities.items() if g not in keep and g not in gone)
            dropped += [g for _, g in oldest[:excess]]
        for g in dropped:
            self.remove(g)
        return dropped
