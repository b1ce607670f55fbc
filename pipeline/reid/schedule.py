"""`ClipSchedule`: fewer Re-ID clips for tracks whose appearance is stable (per camera, seconds).

A track gets a clip at every periodic chance of the cropper (`reid.clip_every` frames) while its appearance is new or
changing. Once two consecutive clip embeddings of the track agree (cosine >= `agree_cos`), the next clip waits at
least `first_interval_s` seconds after the last one; every further agreeing clip doubles that wait, up to
`max_interval_s` (so a stable track is still checked at least every `max_interval_s`, plus one clip period). A clip
that disagrees, a box whose height or width changed by more than `box_change` (relative) since the track's last clip,
or a box covered more than `contact_overlap` by another track's box (a contact, an occlusion: where trackers swap
people) puts the track back on the full rate. Track ends still get their final clip.

Decisions depend only on the frames' timestamps, the boxes and the clip results, so recorded files (whose results are
applied at a fixed step, `reid.file_result_lag_steps`) give the same clips every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class _TrackSchedule:
    stable: int = 0  # consecutive agreeing clip pairs since the last reset
    last_clip_t: float | None = None  # timestamp (s) of the frame at which the last clip was cut
    ref_hw: tuple[float, float] | None = None  # box (height, width) px at the last clip
    last_embedding: np.ndarray | None = None  # float32 (D,) L2-normalised embedding of the latest clip result
    skipped: int = 0  # periodic chances skipped


@dataclass(kw_only=True)
class ClipSchedule:
    """Per-track clip schedule of ONE camera; see the module docstring. Units: seconds, pixels ratios, cosine."""

    agree_cos: float = 0.9
    first_interval_s: float = 2.0
    max_interval_s: float = 8.0
    box_change: float = 0.3
    contact_overlap: float = 0.1

    def __post_init__(self) -> None:
        self._tracks: dict[int, _TrackSchedule] = {}
        self.skipped = 0  # periodic chances skipped, all tracks
        self.resets = 0  # stable tracks put back on the full rate (box change, contact, disagreeing clip)

    def interval_s(self, track_id: int) -> float:
        """The shortest time (s) from the track's last clip to its next one (0: every periodic chance)."""
        st = self._tracks.get(track_id)
        if st is None or st.stable <= 0:
            return 0.0
        return float(min(self.first_interval_s * 2.0 ** (st.stable - 1), self.max_interval_s))

    def observe(self, track_id: int, box: np.ndarray, covered: float) -> None:
        """The track's box (xyxy px) in this frame and the largest fraction of it covered by another track's box: a
        big size change or a contact resets the track to the full rate."""
        st = self._tracks.get(track_id)
        if st is None or st.stable <= 0:
            return
        h, w = float(box[3] - box[1]), float(box[2] - box[0])
        contact = covered > self.contact_overlap
        changed = st.ref_hw is not None and (abs(h / max(st.ref_hw[0], 1e-6) - 1.0) > self.box_change
                                             or abs(w / max(st.ref_hw[1], 1e-6) - 1.0) > self.box_change)
        if contact or changed:
            st.stable = 0
            self.resets += 1

    def due(self, track_id: int, t_s: float) -> bool:
        """At a periodic chance (time t_s): cut a clip now? A skipped chance is counted."""
        st = self._tracks.get(track_id)
        if st is None or st.last_clip_t is None or t_s - st.last_clip_t >= self.interval_s(track_id) - 1e-9:
            return True
        st.skipped += 1
        self.skipped += 1
        return False

    def emitted(self, track_id: int, t_s: float, box: np.ndarray) -> None:
        """A clip of the track was cut at time t_s, its box then (xyxy px) becomes the size reference."""
        st = self._tracks.setdefault(track_id, _TrackSchedule())
        st.last_clip_t = float(t_s)
        st.ref_hw = (float(box[3] - box[1]), float(box[2] - box[0]))

    def on_result(self, track_id: int, embedding: np.ndarray) -> float | None:
        """A clip result of the track, in the order the clips were cut: compare with the previous clip's embedding.
        Returns that cosine (None for the track's first clip or an unknown track)."""
        st = self._tracks.get(track_id)
        if st is None:
            return None
        e = np.asarray(embedding, np.float32)
        norm = float(np.linalg.norm(e))
        e = e / norm if norm > 0 else e
        cos = None if st.last_embedding is None else float(np.dot(st.last_embedding, e))
        st.last_embedding = e
        if cos is not None:
            if cos >= self.agree_cos:
                st.stable += 1
            elif st.stable > 0:
                st.stable = 0
                self.resets += 1
        return cos

    def forget(self, track_id: int) -> None:
        """The track ended (its results may still come: they are ignored)."""
        self._tracks.pop(track_id, None)

    @property
    def tracks(self) -> int:
        return len(self._tracks)
