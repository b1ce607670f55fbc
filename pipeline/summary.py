"""What a run did: per-camera counters, the run's status, its exit code and the summary table printed at the end.

Exit codes: 0 every camera finished, 3 some cameras failed or ended early (truncated), 1 fatal error or no camera
finished, 130 interrupted (Ctrl-C / SIGTERM); 2 (bad config or arguments) is decided before a run starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

EXIT_OK, EXIT_FATAL, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 3, 130


@dataclass
class CameraSummary:
    """What one camera did during a run."""

    camera_id: str
    source: str
    status: str = "pending"  # pending | running | completed | failed | stopped
    frames: int = 0
    detections: int = 0
    track_ids: set[int] = field(default_factory=set)
    dropped: int = 0
    reconnects: int = 0
    error: str | None = None
    first_frame_time: float | None = None
    last_frame_time: float | None = None
    max_lag_s: float = 0.0  # live cameras: wall clock at processing minus wall clock at receipt
    is_live: bool = False
    node: str | None = None  # engine ray: the host (and IP) whose actor ran this camera

    def count_frame(self, n_detections: int, track_ids: list[int], now: float, timestamp_s: float) -> None:
        """One processed frame: `now` is the monotonic clock (s), `timestamp_s` the frame's run-clock time (s)."""
        self.frames += 1
        self.detections += n_detections
        self.track_ids.update(track_ids)
        self.first_frame_time = self.first_frame_time or now
        self.last_frame_time = now
        if self.is_live:
            self.max_lag_s = max(self.max_lag_s, time.time() - timestamp_s)

    @property
    def fps(self) -> float:
        if self.first_frame_time is None or self.last_frame_time is None or self.frames < 2:
            return 0.0
        return (self.frames - 1) / max(self.last_frame_time - self.first_frame_time, 1e-9)


@dataclass
class RunSummary:
    """The result of `Pipeline.run()`."""

    run_id: int | None
    status: str
    cameras: list[CameraSummary]
    wall_s: float
    output_dir: Path
    counters: dict[str, dict] = field(default_factory=dict)  # stage name -> its counters()
    stage_lines: list[str] = field(default_factory=list)  # stages' summary lines, in stage order
    error: str | None = None  # what stopped the run (a broken store, no camera), one line

    @property
    def reid(self) -> dict | None:
        """The Re-ID stage's counters (clips, dropped, batches, tracks with an embedding), None without Re-ID."""
        return self.counters.get("reid")

    @property
    def association(self) -> dict | None:
        """The association's counters (identities, tracks, links by reason; fused mode: ground identities, camera
        tracks, predicted boxes), None without association."""
        return self.counters.get("association", self.counters.get("fused_association"))

    @property
    def events(self) -> dict | None:
        """The action events' counters (source, events, by action), None without events."""
        return self.counters.get("events")

    @property
    def exit_code(self) -> int:
        if self.status == "interrupted" and self.error is None:
            return EXIT_INTERRUPTED
        ok = [c for c in self.cameras if c.status in ("completed", "stopped")]
        if self.status == "failed" or self.error is not None or not ok:
            return EXIT_FATAL
        return EXIT_OK if len(ok) == len(self.cameras) else EXIT_PARTIAL  # failed or truncated cameras: partial

    def table(self) -> str:
        nodes = any(c.node for c in self.cameras)
        head = (
            f"{'camera':<12} {'status':<10} {'frames':>7} {'dets':>7} {'tracks':>6} {'fps':>6} {'dropped':>7} "
            f"{'reconn':>6} {'max lag':>8}" + ("  node" if nodes else "")
        )
        lines = [head, "-" * len(head)]
        for c in self.cameras:
            lines.append(
                f"{c.camera_id:<12} {c.status:<10} {c.frames:>7} {c.detections:>7} {len(c.track_ids):>6} "
                f"{c.fps:>6.1f} {c.dropped:>7} {c.reconnects:>6} "
                + (f"{c.max_lag_s:>7.2f}s" if c.is_live else f"{'-':>8}")
                + (f"  {c.node or '-'}" if nodes else "")
            )
            if c.error:
                lines.append(f"  ! {c.error}")
        lines.extend(self.stage_lines)
        total = sum(c.frames for c in self.cameras)
        lines.append(f"{total} frames in {self.wall_s:.1f} s ({total / max(self.wall_s, 1e-9):.1f} frames/s overall)")
        return "\n".join(lines)
