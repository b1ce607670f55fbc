"""`ClipSchedule`: fewer Re-ID clips for tracks whose appearance is stable (per camera, seconds).

A track gets a clip at every periodic chance of the cropper (`reid.clip_every` frames) while its appearance is new or
changing. Once two consecutive clip embeddings of the track agree (cosine >= `agree_cos`), the next clip waits at
least `first_interval_s` seconds after the last one; every further agreeing clip doubles that wait, up to
`max_interval_s` (so a stable track is still checked at least every `max_interval_s`, plus one clip period). A clip
that disagrees, a box whose height or width changed by more than `box_change` (relative) since the track's last clip,
or a box covered more than `contact_overlap` by another track's box (a contact, an occlusion: where trackers swap
people) puts the track back on the full rate. Track ends still get their final clip.

A clip result reaches the schedule `result_lag_s` seconds after the frame its clip was cut at (and, for recorded
files, `result_lag_frames` frames after it), never sooner, so that a camera worker on another machine (engine ray)
can run that far ahead of the model and still take the same decisions as the local engine. Decisions depend only on
the frames' timestamps, the boxes and the clip results, so recorded files (whose results are applied at a fixed
step, `reid.file_result_lag_steps`) give the same clips every run, under either engine.
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
    result_lag_s: float = 0.0
    result_lag_frames: int = 0

    def __post_init__(self) -> None:
        self._tracks: dict[int, _TrackSchedule] = {}
        self._pending: list[tuple[int, np.ndarray, int, float]] = []  # results not yet visible, in arrival order
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

    def on_result(self, track_id: int, embedding: np.ndarray, cut_frame: int = -1,
                  cut_t_s: float | None = None) -> float | None:
        """A clip result of the track, in the order the clips were cut. With the clip's cut frame (the camera's
        0-based frame count) and time (s) and a result lag set, it waits for `advance` to reach them; otherwise it is
        compared with the previous clip's embedding now. Returns that cosine (None for the track's first clip, an
        unknown track, or a result that waits)."""
        if cut_frame >= 0 and cut_t_s is not None and (self.result_lag_s > 0 or self.result_lag_frames > 0):
            self._pending.append((int(track_id), embedding, int(cut_frame), float(cut_t_s)))
            return None
        return self._fold(track_id, embedding)

    def advance(self, frame: int, t_s: float) -> None:
        """The camera's frame `frame` (0-based count) at time t_s is next: the waiting results of clips cut at least
        `result_lag_frames` frames and `result_lag_s` seconds before it are folded in, in arrival order."""
        if not self._pending:
            return
        keep = []
        for item in self._pending:
            if self.visible(item[2], item[3], frame, t_s):
                self._fold(item[0], item[1])
            else:
                keep.append(item)
        self._pending = keep

    def visible(self, cut_frame: int, cut_t_s: float, frame: int, t_s: float) -> bool:
        """Is the result of a clip cut at (cut_frame, cut_t_s) visible at the camera's frame `frame`, time t_s?"""
        return cut_frame <= frame - self.result_lag_frames and cut_t_s <= t_s - self.result_lag_s + 1e-9

    def _fold(self, track_id: int, embedding: np.ndarray) -> float | None:
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
