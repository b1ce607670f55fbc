"""Search by image: an uploaded person crop -> the run's Re-ID model -> nearest identities by stored track embeddings.

Uploads are validated before any decoding that could allocate much memory: size in bytes, then the image header
(format, width x height) with Pillow, then the pixels. The run's Re-ID model is built from the `reid` section of the
run's stored config (`runs.config`), as the pipeline built it (checkpoint, or backbone + weights), and embeds the crop
as a one-frame clip (T = 1) resized to the model's input size; its embedding is compared (inner product of
L2-normalised vectors = cosine, faiss `IndexFlatIP`, as the association's exact gallery) with every track embedding of
the run, and each identity scores its best track.
"""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("mcsa.web")

class UploadError(ValueError):
    """A rejected upload; `status` is the HTTP status (400 empty / unreadable, 413 too large, 415 not an image)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class SearchUnavailable(RuntimeError):
    """The run cannot be searched by image (no Re-ID model or no embeddings); the message says why."""


@dataclass
class UploadLimits:
    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 25_000_000  # width x height
    min_side: int = 16  # px


_MAGIC = [(b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM", "BMP")]


def sniff_format(data: bytes) -> str | None:
    """The image format from the file's first bytes (JPEG, PNG, WEBP, BMP), else None; never trusts the name."""
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _plugin(fmt: str):
    """Pillow's decoder class for one format, used directly: `PIL.Image.open` may be patched by other libraries
    (Ultralytics retries unknown files by installing packages), and only these four formats are accepted anyway."""
    if fmt == "JPEG":
        from PIL.JpegImagePlugin import JpegImageFile as cls
    elif fmt == "PNG":
        from PIL.PngImagePlugin import PngImageFile as cls
    elif fmt == "WEBP":
        from PIL.WebPImagePlugin import WebPImageFile as cls
    else:
        from PIL.BmpImagePlugin import BmpImageFile as cls
    return cls


def decode_upload(data: bytes, limits: UploadLimits = UploadLimits()) -> np.ndarray:
    """Validate and decode an uploaded image -> uint8 BGR (H, W, 3); raises `UploadError` with a clear message."""
    if not data:
        raise UploadError(400, "the uploaded file is empty: choose a JPEG or PNG image of a person")
    if len(data) > limits.max_bytes:
        raise UploadError(413, f"the uploaded file is {len(data) / 1e6:.1f} MB, more than the "
                               f"{limits.max_bytes / 1e6:.0f} MB limit: upload a smaller crop of the person")
    fmt = sniff_format(data)
    if fmt is None:
        kind = "a GIF image" if data[:4] == b"GIF8" else "an image"
        raise UploadError(415, f"the uploaded file is not {kind} this app reads (use JPEG, PNG, WebP or BMP)")
    try:
        probe = _plugin(fmt)(io.BytesIO(data))  # parses the header only
        w, h = probe.size
    except Exception:  # noqa: BLE001 - Pillow raises SyntaxError / OSError / ValueError on a bad header
        raise UploadError(400, f"the {fmt} image is damaged (its header cannot be read): upload it again") from None
    if w * h > limits.max_pixels:
        raise UploadError(413, f"the image is {w} x {h} px, more than {limits.max_pixels / 1e6:.0f} megapixels: "
                               "upload a crop of the person")
    if min(w, h) < limits.min_side:
        raise UploadError(400, f"the image is {w} x {h} px, smaller than {limits.min_side} px on a side: "
                               "upload a larger crop of the person")
    try:
        rgb = np.asarray(probe.convert("RGB"))
    except Exception:  # noqa: BLE001
        raise UploadError(400, f"the {fmt} image is damaged and cannot be decoded: upload it again") from None
    finally:
        probe.close()
    return np.ascontiguousarray(rgb[:, :, ::-1])


class QueryEncoder:
    """The Re-ID model of a run, built from its stored config, embedding single images. Models are cached in the
    process by their weights, input size and device; building one (and OpenVINO compiling it) takes seconds, so the
    app warms it up."""

    _encoders: dict[tuple, object] = {}  # shared by every QueryEncoder of the process (apps on several stores)
    _lock = threading.Lock()

    def __init__(self, device: str = "cpu", cpu_threads: int | None = None) -> None:
        self.device, self.cpu_threads = device, cpu_threads

    def encoder_for(self, run_config: dict):
        from pipeline.config import ReIDStageConfig
        from pipeline.reid import ClipEncoder, ReIDLoadError

        section = dict(run_config.get("reid") or {})
        if not section or not section.get("enabled", True):
            raise SearchUnavailable("this run had Re-ID off (reid.enabled: false): it has no embeddings to search")
        try:
            cfg = ReIDStageConfig(**section)
        except Exception as err:  # noqa: BLE001
            raise SearchUnavailable(f"the run's stored reid config cannot be read ({str(err).splitlines()[0]})") \
                from None
        key = (cfg.checkpoint, cfg.backbone, cfg.backbone_weights, tuple(cfg.input_size), cfg.cpu_backend,
               self.device, self.cpu_threads)
        with self._lock:
            enc = self._encoders.get(key)
            if enc is None:
                try:
                    enc = ClipEncoder(cfg.checkpoint, cfg.backbone, cfg.backbone_weights, tuple(cfg.input_size),
                                      self.device, False, self.cpu_threads, cfg.cpu_backend)
                except ReIDLoadError as err:
                    raise SearchUnavailable(f"the run's Re-ID model cannot be loaded here: {err}") from None
                self._encoders[key] = enc
        return enc

    def embed(self, run_config: dict, image_bgr: np.ndarray) -> np.ndarray:
        """uint8 BGR (H, W, 3) person crop -> float32 (D,) L2-normalised embedding."""
        from pipeline.reid.cropper import crop_resize

        enc = self.encoder_for(run_config)
        h, w = image_bgr.shape[:2]
        box = np.array([0, 0, w, h], np.float32)
        crop = crop_resize(image_bgr, box, enc.input_size, enc.resize)  # RGB (H, W, 3)
        emb, _ = enc.encode(crop[None, None])  # (1, T=1, H, W, 3)
        vec = emb[0].astype(np.float32)
        return vec / max(float(np.linalg.norm(vec)), 1e-12)


class IdentitySearch:
    """faiss exact inner-product index over a run's track embeddings; ranks identities by their best track."""

    def __init__(self, store) -> None:
        self.store = store
        self._index: dict[int, tuple[int, object]] = {}
        self._lock = threading.Lock()

    def warm(self, run_id: int) -> None:
        """Load the run's embeddings and build its index now (the first search is then fast)."""
        self._faiss(run_id)

    def _faiss(self, run_id: int):
        import faiss

        keys, matrix = self.store.embeddings(run_id)
        with self._lock:
            cached = self._index.get(run_id)
            if cached is not None and cached[0] == id(matrix):
                return keys, cached[1]
            index = None
            if len(keys):
                index = faiss.IndexFlatIP(matrix.shape[1])
                index.add(np.ascontiguousarray(matrix, np.float32))
            self._index[run_id] = (id(matrix), index)
            return keys, index

    def rank(self, run_id: int, query: np.ndarray, top: int = 10, exclude_camera: str | None = None) -> list[dict]:
        """Identities nearest to `query` (D,): [{label, score (cosine), camera_id, track_id (best track)}], best
        first; `exclude_camera` leaves that camera's tracks out (cross-camera search)."""
        keys, index = self._faiss(run_id)
        if index is None:
            raise SearchUnavailable(f"run {run_id} has no track embeddings yet (Re-ID off, or nothing seen yet)")
        q = np.ascontiguousarray(np.asarray(query, np.float32).reshape(1, -1))
        if q.shape[1] != index.d:
            raise SearchUnavailable(f"the model's embedding has {q.shape[1]} values, the run's {index.d}: the run was "
                                    "made with another Re-ID model")
        labels = self.store.index(run_id).tracks
        k = min(len(keys), max(256, top * 16))
        best: dict[str, dict] = {}
        while True:
            scores, rows = index.search(q, k)
            for score, row in zip(scores[0].tolist(), rows[0].tolist()):
                if row < 0:
                    continue
                cam, tid = keys[row]
                if cam == exclude_camera:
                    continue
                info = labels.get((cam, tid))
                label = info.label if info is not None else f"{cam}:{tid}"
                if label not in best:
                    best[label] = dict(label=label, score=round(float(score), 4), camera_id=cam, track_id=tid)
            if len(best) >= top or k >= len(keys):
                break
            k = min(len(keys), k * 4)
        return sorted(best.values(), key=lambda r: -r["score"])[:top]
