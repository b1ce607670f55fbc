"""Typed configuration: YAML validated into pydantic models, with defaults for everything optional.

`load_config(path)` reads a YAML file; `config_from_sources(["cam=uri", ...])` builds one without YAML. Errors raise
`ConfigError` whose message names the key, the bad value and what is expected, on one line per problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from core.paths import expand_path, shared_dir

# camera id -> homography file; ${SHARED} / ~ expanded in every path
HomographyFiles = Annotated[dict[str, str], AfterValidator(lambda v: {cam: expand_path(p) for cam, p in v.items()})]


class ConfigError(ValueError):
    """A config file or option is invalid; the message says which key and what is expected."""


def _yaml_word(value):
    """YAML reads an unquoted on / off (yes / no, true / false) as a boolean: back to the word a setting lists."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


YAML_WORD = BeforeValidator(_yaml_word)  # for Literal settings with "on" / "off" among their words


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class CameraConfig(_Strict):
    """One camera: where its frames come from and how its clock maps onto the run's clock."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="camera id used in outputs (letters, digits, _ . -)")
    source: str | int = Field(description="video file, rtsp:// URL, webcam index or image folder")
    fps: float | None = Field(default=None, gt=0, description="override the container's frame rate (files)")
    start_time_s: float = Field(default=0.0, description="clock offset of frame 0 (files), so cameras share a clock")
    max_frames: int | None = Field(default=None, gt=0, description="stop this camera after N frames")
    resources: dict[str, float] = Field(default_factory=dict, description="engine ray: where this camera's actor "
                                        "runs, as Ray resources: CPU, GPU, or a custom/node resource (e.g. "
                                        "{'node:10.0.0.5': 0.01} or {'entrance': 1}); default: anywhere, 0 CPUs")

    @field_validator("source")
    @classmethod
    def _expand(cls, value: str | int) -> str | int:
        return expand_path(value) if isinstance(value, str) else value


class DetectorConfig(_Strict):
    """Ultralytics YOLO person detector."""

    weights: str = Field(
        default="${SHARED}/models/yolo11n_int8_openvino_model",
        description="local path: .pt, OpenVINO folder, .onnx or TensorRT .engine",
    )
    conf: float = Field(default=0.1, ge=0.0, le=1.0, description="minimum detection score kept")
    iou: float = Field(default=0.7, gt=0.0, le=1.0, description="NMS IoU threshold")
    imgsz: int = Field(default=640, ge=32, description="inference size in pixels")
    device: str = Field(default="auto", description="auto (CUDA when present), cpu, cuda, cuda:0, ...")
    classes: list[int] = Field(default=[0], description="class ids kept (COCO 0 = person)")
    half: bool = Field(default=False, description="fp16 inference on CUDA")
    direct: Annotated[Literal["auto", "on", "off"], YAML_WORD] = Field(
        default="auto", description=".pt weights: letterbox, model and NMS on the model's device, one batch per frame "
        "size (models/detector_direct.py; several times faster than Ultralytics' predictor with many cameras on a "
        "GPU); auto: on CUDA; off: always Ultralytics' predictor")
    service: bool = Field(default=False, description="engine ray: run the detector as a Ray Serve deployment whose "
                          "@serve.batch merges the frames of many cameras into one detector call (max_batch frames "
                          "within max_wait_ms); camera actors then load no detector of their own. For GPU nodes; "
                          "false: one detector per camera actor. The local engine ignores it")
    replicas: int = Field(default=1, ge=1, description="engine ray, service true: detector deployment replicas")
    num_gpus: float = Field(default=0.0, ge=0, description="engine ray, service true: GPUs (or a fraction) reserved "
                            "by each detector replica")
    max_batch: int = Field(default=16, ge=1, description="engine ray, service true: frames per detector call")
    max_wait_ms: float = Field(default=50.0, ge=0, description="engine ray, service true: longest wait for a "
                               "detector batch to fill (a batch holding a frame of every camera runs at once)")

    @field_validator("weights")
    @classmethod
    def _expand(cls, value: str) -> str:
        return expand_path(value)

    @model_validator(mode="after")
    def _replicas_need_service(self) -> "DetectorConfig":
        if self.replicas > 1 and not self.service:
            raise ValueError(f"detector.replicas {self.replicas} needs detector.service: true (without the service "
                             "each camera actor loads its own detector)")
        return self


class TrackletConfig(_Strict):
    """Cut tracks into conservative tracklets where identities may have switched (pipeline/tracking/tracklets.py)."""

    enabled: bool = Field(default=False, description="report tracklet ids: a track gets a new id after it overlapped "
                          "another box or went unreported for a while (for cross-camera association)")
    contact_iou: float = Field(default=0.2, gt=0, le=1, description="IoU with another reported box that counts as "
                               "contact")
    max_gap: int = Field(default=5, ge=1, description="frames a track may go unreported before a new tracklet starts")


class TrackerConfig(_Strict):
    """Per-camera tracker: a registered name and overrides of its YAML defaults (configs/trackers/<name>.yaml)."""

    name: str = "mcsa"
    params: dict[str, Any] = Field(default_factory=dict)
    tracklets: TrackletConfig = Field(default_factory=TrackletConfig)

    @model_validator(mode="after")
    def _known(self) -> "TrackerConfig":
        """A registered tracker and parameters it takes (checked now, not after the models have loaded)."""
        import inspect

        from pipeline.tracking import TRACKERS

        if self.name not in TRACKERS:
            raise ValueError(f"unknown tracker {self.name!r}; known: {', '.join(TRACKERS.names())}")
        accepted = set(inspect.signature(TRACKERS.get(self.name).__init__).parameters) - {"self"}
        unknown = sorted(set(self.params) - accepted)
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for tracker {self.name!r}; valid: "
                             f"{', '.join(sorted(accepted))}")
        return self


class ClipScheduleConfig(_Strict):
    """Fewer Re-ID clips for tracks whose appearance is stable (`reid.schedule`, pipeline/reid/schedule.py)."""

    # On by default: it keeps accuracy and cuts the model's work. Measured with bench/reid_schedule.py (2026-11-28,
    # OSNet x0.25): PETS09-S2L1 795 frames 451 -> 316 clips (0.70x), MOT IDF1 / HOTA unchanged (78.93 / 58.74 local
    # ids, 49.39 / 44.05 re-linked global ids); EPFL Terrace 2 x 1500 frames 753 -> 505 clips (0.67x),
    # cross-camera IDF1 offline 75.46 -> 77.05, online 74.60 -> 74.50. The thresholds are not tuned to either:
    # consecutive clips of one track agree at cosine >= 0.93 (5th percentile) on both, different people at the same
    # time stay below 0.75 (PETS09, 95th percentile). With the 1 s result lag (same under engine ray, where the
    # camera actors apply it): PETS09 453 -> 306 clips, Terrace 750 -> 554, online ids as without the lag (README).
    enabled: bool = Field(default=True, description="skip periodic clips of tracks whose consecutive clip "
                          "embeddings agree; off: a clip every `reid.clip_every` frames of every track")
    agree_cos: float = Field(default=0.9, ge=-1, le=1, description="two consecutive clip embeddings of a track agree "
                             "at this cosine or more")
    first_interval_s: float = Field(default=2.0, gt=0, description="after the first agreeing pair, the next clip "
                                    "waits this long after the last one, s; doubled by each further agreeing clip")
    max_interval_s: float = Field(default=8.0, gt=0, description="the longest wait between two clips of a stable "
                                  "track, s")
    box_change: float = Field(default=0.3, gt=0, description="back to the full rate when the box height or width "
                              "changed by more than this fraction since the track's last clip")
    contact_overlap: float = Field(default=0.1, ge=0, le=1, description="back to the full rate while more than this "
                                   "fraction of the box is covered by another track's box (contact, occlusion)")
    result_lag_s: float = Field(default=1.0, ge=0, description="a clip result steers the schedule from this long "
                                "after its clip was cut, s (the same under every engine: Ray camera actors run this "
                                "far ahead of the model without waiting)")

    @model_validator(mode="after")
    def _order(self) -> "ClipScheduleConfig":
        if self.max_interval_s < self.first_interval_s:
            raise ValueError(f"reid.schedule.max_interval_s ({self.max_interval_s}) must be >= first_interval_s "
                             f"({self.first_interval_s})")
        return self


class ReIDStageConfig(_Strict):
    """Re-ID-AR on tracklet clips of every confirmed track, batched across cameras (pipeline/reid/)."""

    enabled: bool = Field(default=True, description="compute appearance embeddings (and actions) per track")
    checkpoint: str | None = Field(default=None, description="Re-ID-AR checkpoint from `run_pipeline.py train`, or "
                                   "an export folder from `run_pipeline.py export`")
    backbone: str = Field(default="osnet_x0_25", description="backbone used when no checkpoint is given, or a "
                          "frame-level re-id model: onnx:PATH / openvino:PATH.xml")
    backbone_weights: str | None = Field(
        default="${SHARED}/models/osnet_x0_25_msmt17.pth", description="backbone weights used without a checkpoint"
    )
    input_size: tuple[int, int] = Field(default=(256, 128), description="crop (H, W) px without a checkpoint")
    clip_len: int = Field(default=4, ge=1, description="T crops per clip")
    clip_every: int = Field(default=10, ge=1, description="frames of a track between two clips")
    window: int = Field(default=16, ge=1, description="recent crops kept per track (ring buffer)")
    min_box_height: float = Field(default=40.0, ge=0, description="crops of smaller boxes (px) are skipped")
    border_margin: float = Field(default=2.0, ge=0, description="boxes this close (px) to the border are skipped")
    max_overlap: float = Field(default=0.6, ge=0, le=1, description="skip crops covered more than this by another")
    max_tracks: int = Field(default=64, ge=1, description="tracks buffered per camera (memory bound)")
    end_after_frames: int = Field(default=30, ge=1, description="a track unseen this long has ended")
    schedule: ClipScheduleConfig = Field(default_factory=ClipScheduleConfig)
    max_batch: int = Field(default=32, ge=1, description="clips per model call")
    max_wait_ms: float = Field(default=50.0, ge=0, description="longest wait for a batch to fill")
    max_queue: int = Field(default=256, ge=1, description="pending clips before the oldest are dropped (live)")
    file_result_lag_steps: int = Field(
        default=3, ge=1, description="recorded files: a clip's result is applied this many loop steps after its "
        "request (waiting for it if needed), so every output depends on the data only; live cameras apply results "
        "as soon as they are ready")
    device: str = Field(default="auto", description="auto (CUDA when present), cpu, cuda:0")
    amp: bool = Field(default=True, description="fp16/bf16 autocast on CUDA")
    cpu_threads: int | None = Field(default=None, ge=1, description="threads on CPU (default: the runtime's)")
    cpu_backend: Literal["auto", "openvino", "torch", "onnxruntime"] = Field(
        default="auto", description="CPU inference: OpenVINO-compiled (auto: when installed) or PyTorch eager; for an "
        "export folder (reid.checkpoint: DIR) onnxruntime or openvino picks its runtime"
    )
    input_color: Literal["auto", "rgb", "bgr"] = Field(
        default="auto", description="channel order of a foreign model (reid.backbone: onnx:/openvino:); auto: from "
        "its metadata, else rgb"
    )
    input_mean: tuple[float, float, float] | None = Field(
        default=None, description="foreign model: per-R,G,B mean in 0..1 units (default: its metadata, else ImageNet)"
    )
    input_std: tuple[float, float, float] | None = Field(
        default=None, description="foreign model: per-R,G,B std in 0..1 units (default: its metadata, else ImageNet)"
    )
    embedding_dim: int | None = Field(
        default=None, ge=1, description="the embedding size the model must give (e.g. an existing gallery's); a "
        "model of another size is an error"
    )
    num_gpus: float = Field(default=0.0, ge=0, description="engine ray: GPUs (or a fraction) reserved by the Re-ID "
                            "service actor (each Serve replica)")
    ray_service: Literal["auto", "actor", "serve"] = Field(
        default="auto", description="engine ray: how the Re-ID model is served; actor: one actor fed by the driver's "
        "batcher (deterministic: recorded files give the local engine's outputs); serve: a Ray Serve deployment whose "
        "@serve.batch merges the cameras' requests (max_batch clips, max_wait_ms); auto: serve when a camera is live "
        "(URL or webcam) or replicas > 1, else actor")
    replicas: int = Field(default=1, ge=1, description="engine ray, ray_service serve: Re-ID deployment replicas")

    @field_validator("checkpoint", "backbone_weights")
    @classmethod
    def _expand(cls, value: str | None) -> str | None:
        return expand_path(value) if value else value

    @model_validator(mode="after")
    def _one_actor(self) -> "ReIDStageConfig":
        if self.ray_service == "actor" and self.replicas > 1:
            raise ValueError(f"reid.replicas {self.replicas} needs reid.ray_service serve (or auto): the actor service "
                             "is one actor")
        return self

    @field_validator("backbone")
    @classmethod
    def _expand_model_path(cls, value: str) -> str:
        """`onnx:${SHARED}/m.onnx` -> `onnx:/abs/m.onnx`; plain backbone names stay as they are."""
        for kind in ("onnx:", "openvino:"):
            if value.startswith(kind):
                if not value[len(kind):].strip():
                    raise ValueError(f"{kind}PATH needs a model path after '{kind}'")
                return kind + expand_path(value[len(kind):])
        return value


class CameraLinkConfig(_Strict):
    """How two cameras relate: overlapping views, or a transit window between non-overlapping ones."""

    cameras: tuple[str, str] = Field(description="the two camera ids of the pair")
    overlap: bool = Field(default=False, description="the views overlap: one person can be in both at once")
    min_transit_s: float = Field(default=0.0, ge=0, description="non-overlapping: shortest walk between the views")
    max_transit_s: float | None = Field(default=None, ge=0, description="non-overlapping: longest (None: unbounded)")


class DefaultLinkConfig(_Strict):
    """The relation of camera pairs that `association.topology` does not list."""

    overlap: bool = False
    min_transit_s: float = Field(default=0.0, ge=0)
    max_transit_s: float | None = Field(default=None, ge=0)


class FusionConfig(_Strict):
    """Ground-plane fusion of overlapping cameras (`association.mode: fused`, pipeline/fusion/): metres and seconds."""

    ground_units_per_m: float = Field(default=1.0, gt=0, description="homography ground units per metre (EPFL "
                                      "files: 40, a 2.5 cm grid; `run_pipeline.py calibrate` output: 1)")
    gate_m: float = Field(default=2.5, gt=0, description="largest distance between a view's foot point and a ground "
                          "track (or two views' foot points of one person), m")
    gate_sigma: float = Field(default=5.0, gt=0, description="Mahalanobis gate, standard deviations")
    reacquire_mps: float = Field(default=1.0, ge=0, description="the gate widens by this speed times the time a "
                                 "track has been unseen, m/s")
    foot_sigma: float = Field(default=0.04, gt=0, description="foot-point pixel uncertainty, fraction of box height")
    calib_sigma_m: float = Field(default=0.3, gt=0, description="homography error floor, m (overlapping EPFL views "
                                 "disagree by 0.5-0.6 m median raw, 0.2-0.3 m once aligned: `align`)")
    accel_sigma: float = Field(default=2.0, gt=0, description="Kalman process noise: white acceleration, m/s^2")
    speed_sigma: float = Field(default=1.5, gt=0, description="initial speed uncertainty of a new track, m/s")
    high_score: float = Field(default=0.5, ge=0, le=1, description="detections from this score start and continue "
                              "tracks")
    low_score: float = Field(default=0.1, ge=0, le=1, description="detections from this score only continue tracks "
                             "their view saw just before (IoU >= low_iou)")
    low_iou: float = Field(default=0.3, ge=0, le=1, description="IoU a low-score detection needs with the track's box")
    min_view_iou: float = Field(default=0.1, ge=0, le=1, description="a view that saw the track within "
                                "view_memory_s only gives it detections overlapping its expected box this much")
    new_view_gate_m: float = Field(default=1.0, gt=0, description="a view without a recent box of the track joins it "
                                   "only within join_sigmas x the views' measured disagreement, at least this, m "
                                   "(gate_m until the views are aligned)")
    view_min_hits: int = Field(default=3, ge=1, description="a view's boxes of a track guide and gate it only after "
                               "this many in a row (one stray false positive must not steer the view)")
    iou_weight: float = Field(default=0.5, ge=0, description="cost weight of (1 - IoU) with the view's expected box")
    view_memory_s: float = Field(default=1.0, gt=0, description="how long a view's last box of a track guides it, s")
    appearance: Literal["detections", "tracks", "none"] = Field(
        default="detections", description="what the fusion's appearance terms read (needs reid.enabled): detections: "
        "each detection from high_score up embedded on its own, every frame, in one Re-ID batch for all cameras; "
        "tracks: the camera tracker's running clip embedding of the track a detection continues (no extra Re-ID, but "
        "a local track that swapped people carries both: occluded crowds 0.76 IDF1 against 0.88, below none's 0.79, "
        "docs/fusion.md); none: geometry only")
    app_weight: float = Field(default=1.0, ge=0, description="cost weight of the embedding cosine distance")
    max_app_dist: float | None = Field(default=0.6, ge=0, description="cosine distance vetoing a match (None: off)")
    split_app_dist: float | None = Field(default=0.5, ge=0, description="cosine distance above which two views' new "
                                         "boxes never start one person together, and two tracks (split_app_min "
                                         "embeddings each) are never joined as duplicates: two people (None: off)")
    split_app_min: int = Field(default=3, ge=1, description="embeddings each track needs before split_app_dist "
                               "vetoes a duplicate merge")
    keep_shown_identity: bool = Field(default=True, description="two tracks of one person joined: the identity "
                                      "whose detections were reported more often so far is kept (False: the older one)")
    view_consistency: bool = Field(default=True, description="with 3+ views on a person, a view whose detection is "
                                   "farther than its join gate from where the other views put them leaves the track "
                                   "for that step")
    confirm_s: float = Field(default=0.2, ge=0, description="a new ground track gets an identity after this long")
    confirm_frac: float = Field(default=0.6, ge=0, le=1, description="... seen in at least this fraction of its steps")
    confirm_steady: int | None = Field(default=2, ge=1, description="... and given by one view at least this many "
                                       "boxes in a row, each overlapping the one before (IoU >= min_view_iou): "
                                       "isolated boxes of several views that merely land near each other on the "
                                       "ground (false positives) are not a person (None: off)")
    max_lost_s: float = Field(default=2.0, gt=0, description="a track unseen by every view this long ends, s")
    tentative_lost_s: float = Field(default=0.3, gt=0, description="an unconfirmed track unseen this long ends, s")
    birth_min_sep_m: float = Field(default=0.5, ge=0, description="no new track closer than this to a live one, m")
    merge_m: float = Field(default=1.0, ge=0, description="a young track always this close to an older one, in "
                           "disjoint views since its birth, is the same person (m) ...")
    merge_s: float = Field(default=0.5, gt=0, description="... after this long, s")
    merge_in_view: bool = Field(default=True, description="... counting only steps in which each track stands "
                                "between the side edges (and below the top) of every view that saw the other: a view "
                                "cannot see a person beyond its frame, so not seeing them there is no sign of one "
                                "person held twice; the same for duplicate_s")
    duplicate_s: float | None = Field(default=0.5, gt=0, description="two tracks of any age closer than merge_m "
                                      "that no camera has seen both of at one moment for this long, s, are one "
                                      "person held twice: the younger joins the older identity (None: off)")
    duplicate_veto_frac: float | None = Field(default=0.1, ge=0, le=1, description="... unless one camera saw both "
                                              "at one moment in at least this fraction of the steps of the last "
                                              "duplicate_veto_s: two people standing close (None: off)")
    duplicate_veto_s: float = Field(default=2.0, gt=0, description="see duplicate_veto_frac, s")
    covisible_s: float | None = Field(default=4.0, gt=0, description="two tracks that one camera saw at one moment, "
                                      "as two boxes, for this long in all (s) are known to be two people: the "
                                      "lasting-duplicate rule joins them only after covisible_duplicate_s (None: off)")
    covisible_duplicate_s: float = Field(default=2.0, gt=0, description="s in a row that two people known apart "
                                         "(covisible_s) must look like one person held twice before they are joined")
    provisional_alias: bool = Field(default=True, description="a young track that so far looks like a duplicate of "
                                    "exactly one older track (near it, in other views, since birth) reports the older "
                                    "identity until it is merged or parts")
    handover_views: int | None = Field(default=1, ge=1, description="a confirmed track every view has lost for "
                                       "handover_lost_s, whose person at least this many views passed to one younger "
                                       "track in the last handover_window_s (that view's next box overlapping its "
                                       "last one, IoU >= 0.5, within handover_gap_s), continues on that track: it "
                                       "had been dragged off its person (None: off)")
    handover_lost_s: float = Field(default=0.5, gt=0, description="see handover_views, s")
    handover_window_s: float = Field(default=2.0, gt=0, description="see handover_views, s")
    handover_gap_s: float = Field(default=0.12, gt=0, description="see handover_views, s")
    resume_lost: bool = Field(default=True, description="a new track confirmed inside the grown gate of a track every "
                              "view lost (one-to-one, nothing else in either's gate) continues the lost identity")
    resume_app_margin: float | None = Field(default=0.1, ge=0, description="Re-ID on: where two lost tracks (or "
                                            "two new ones) share a gate, the pair that looks alike by this much "
                                            "(cosine distance) more than every rival pair resumes all the same "
                                            "(None: ambiguity resumes nothing)")
    resume_app_dist: float | None = Field(default=0.3, ge=0, description="Re-ID on: a new track within this cosine "
                                          "distance of a lost track's appearance may resume it outside gate_sigma, "
                                          "still within gate_m + reacquire_mps x the time lost (None: the sigma "
                                          "gate always)")
    offset_rate: float = Field(default=0.0, ge=0, le=1, description="update rate of each view's per-person offset "
                               "(0: off; per-person offsets let one track hold two people in two views; the "
                               "per-camera alignment corrects the homographies instead)")
    align: bool = Field(default=True, description="learn one affine ground correction per camera from the fusion's "
                        "own unambiguous multi-view moments, so overlapping views agree (pipeline/fusion/alignment.py)")
    align_min_samples: int = Field(default=50, ge=3, description="multi-view moments a camera needs before its "
                                   "correction is used")
    align_every_s: float = Field(default=1.0, gt=0, description="refit the corrections this often, s")
    align_isolation_m: float = Field(default=1.5, gt=0, description="a moment teaches the alignment only when nobody "
                                     "else is within this distance, m")
    join_sigmas: float = Field(default=3.0, gt=0, description="see new_view_gate_m")
    predict_boxes: bool = Field(default=True, description="add flagged boxes projected from the ground track into "
                                "views whose detector missed a person another view sees")
    report_detections: bool = Field(default=True, description="report a view's detections that the fusion "
                                    "identified but the camera's tracker has not confirmed (or has lost), with the "
                                    "detector's box and score")
    report_unidentified: bool = Field(default=False, description="also report the camera tracker's boxes that the "
                                      "fusion did not identify at that step (gated out of every ground track, or of a "
                                      "person not confirmed on the ground yet), with the identity their local track "
                                      "last showed; off: every view reports what the ground fusion sees")
    predict_memory_s: float = Field(default=2.0, gt=0, description="predicted boxes keep the size of the view's last "
                                    "box this long, then the camera's learnt size at that image position")
    predict_unseen_s: float | None = Field(default=1.25, gt=0, description="a view that last had its own box of a "
                                           "person longer ago than this gets no predicted box of them (they left "
                                           "it, or are hidden for good), s; null: no limit")
    unpaired_cost: float | None = Field(default=0.75, gt=0, description="per view, a detection or a track may stay "
                                        "unpaired at this cost each (in the units of the pairing cost: 1 at the gate "
                                        "+ iou_weight x (1 - IoU) + appearance), so the assignment never bends other "
                                        "pairs to place a stray box; 0.75: half the largest geometric cost a pair "
                                        "that passes the gates can have; null: pair as many as possible")
    predict_full_size: bool = Field(default=True, description="a predicted box is at least the camera's learnt "
                                    "person size at its image position: a box remembered from a partly hidden person "
                                    "(cut at the bottom by an occluder, or narrowed) is extended down from its top and "
                                    "widened about its centre")
    predict_min_inside: float | None = Field(default=0.8, gt=0, le=1, description="a predicted box whose "
                                             "full size lies less than this fraction inside the frame is not given "
                                             "(a person walking out of the view, or cut by its bottom edge, whom the "
                                             "projection places least well); null: any box whose foot point is in view")
    disagreement_warn_m: float = Field(default=1.5, gt=0, description="warn when two views' mean offsets for one "
                                       "person differ by more than this (recalibrate), m")
    offline_rewrite_s: float | None = Field(default=2.0, ge=0, description="offline pass (association.offline, "
                                            "recorded files): when the fusion joined a track at most this old into "
                                            "an older identity (a duplicate, a person found again, a handover), the "
                                            "boxes it sent out before the join take the older identity in mot/ "
                                            "(mot_online/ keeps them as sent), s; null: no offline pass")
    groups: list[list[str]] | None = Field(default=None, description="groups of overlapping cameras, each tracked "
                                           "on its own ground plane, e.g. [[c0, c1], [c2, c3]] (default: one group "
                                           "of every camera with a homography); the groups and the cameras outside "
                                           "them are linked by Re-ID appearance and the topology's transit windows")

    def params(self):
        """The `pipeline.fusion.FusionParams` of this config."""
        from pipeline.fusion.associator import FusionParams

        fields = set(FusionParams.__dataclass_fields__)
        return FusionParams(**{k: v for k, v in self.model_dump().items() if k in fields})


class AssociationConfig(_Strict):
    """Cross-camera identity association (pipeline/association/): global ids for local tracks."""

    enabled: bool = Field(default=False, description="give tracks global identities; mot/ then holds global ids")
    mode: Literal["tracks", "fused"] = Field(default="tracks", description="tracks: match per-camera tracks "
                                             "(any cameras); fused: overlapping cameras with homographies tracked "
                                             "once on the ground plane (pipeline/fusion/)")
    fusion: FusionConfig = Field(default_factory=FusionConfig, description="ground-plane fusion (mode: fused)")
    use_appearance: bool = Field(default=True, description="match on Re-ID embeddings (needs reid.enabled)")
    constraints: bool = Field(default=True, description="apply topology, simultaneity and ground-plane constraints")
    index: Literal["flat", "ivf", "hnsw"] = Field(default="flat", description="faiss gallery index (exact: flat)")
    nlist: int = Field(default=1024, ge=1, description="ivf: inverted lists")
    nprobe: int = Field(default=32, ge=1, description="ivf: lists probed per query")
    hnsw_m: int = Field(default=32, ge=2, description="hnsw: links per node")
    ef_search: int = Field(default=64, ge=1, description="hnsw: search breadth")
    top_k: int = Field(default=10, ge=1, description="gallery candidates per track")
    min_clips: int = Field(default=2, ge=1, description="Re-ID clips a track needs before it is matched")
    min_boxes: int = Field(default=10, ge=1, description="boxes a track needs before it is matched without appearance")
    match_threshold: float = Field(default=0.55, description="lowest score (cosine + ground bonus) that links a track")
    relink_margin: float = Field(default=0.1, ge=0, description="score gain needed to move a track to another id")
    ground_gate: float = Field(default=60.0, gt=0, description="largest mean ground distance (homography units) "
                               "between simultaneous tracks of one identity")
    ground_weight: float = Field(default=0.3, ge=0, description="score bonus for ground distance 0 (linear to 0 at "
                                 "the gate)")
    sync_tolerance_s: float = Field(default=0.1, ge=0, description="two cameras' moments closer than this are 'the "
                                    "same moment'")
    overlap_tolerance_s: float = Field(default=0.2, ge=0, description="time overlap tolerated between tracks of one "
                                       "identity in one camera (or non-overlapping cameras)")
    track_end_s: float = Field(default=2.0, gt=0, description="a track unseen this long has ended")
    max_members: int = Field(default=32, ge=1, description="recent tracks kept per identity for its constraints")
    max_identity_age_s: float | None = Field(default=3600.0, gt=0, description="identities unseen this long are "
                                             "dropped from the gallery")
    max_identities: int | None = Field(default=100_000, ge=1, description="gallery size bound (oldest dropped)")
    offline: bool = Field(default=True, description="refine ids after the run (recorded files only): mot/ gets the "
                          "refined ids, mot_online/ keeps the online ones (mode tracks: clustering of the tracks, "
                          "offline_threshold; mode fused: a track joined young gives its earlier boxes the identity "
                          "it joined, fusion.offline_rewrite_s)")
    offline_threshold: float = Field(default=0.55, description="lowest average-linkage score merging two clusters")
    topology: list[CameraLinkConfig] = Field(default_factory=list, description="camera pairs and how they relate")
    default_link: DefaultLinkConfig = Field(default_factory=DefaultLinkConfig, description="pairs not listed")
    homographies: HomographyFiles = Field(default_factory=dict, description="camera id -> image->ground 3x3 file")

    @model_validator(mode="after")
    def _fused_needs_homographies(self) -> "AssociationConfig":
        if self.enabled and self.mode == "fused" and not self.homographies:
            raise ValueError("association.mode fused needs association.homographies (camera id -> image->ground file; "
                             "fit one with `run_pipeline.py calibrate --points CSV`), or use mode: tracks")
        seen: set[str] = set()
        for group in self.fusion.groups or []:
            if not group:
                raise ValueError("association.fusion.groups: a group is empty; list the overlapping cameras of each")
            for cam in group:
                if cam in seen:
                    raise ValueError(f"association.fusion.groups: camera {cam!r} is in two groups; a camera belongs "
                                     "to one group of overlapping cameras")
                if cam not in self.homographies:
                    raise ValueError(f"association.fusion.groups: camera {cam!r} has no homography; add it to "
                                     "association.homographies (run_pipeline.py calibrate --points CSV)")
                seen.add(cam)
        return self

    @property
    def fused_cameras(self) -> set[str]:
        """The cameras tracked on a ground plane in mode fused: those of `fusion.groups`, or every camera with a
        homography when no groups are given (the others are linked by appearance)."""
        if self.fusion.groups is not None:
            return {cam for group in self.fusion.groups for cam in group}
        return set(self.homographies)


class MotionConfig(_Strict):
    """Motion-based action source (standing / walking / running from speed), used without a trained action branch."""

    walk_hps: float = Field(default=0.2, gt=0, description="walking from this speed, box-heights/s (no homography)")
    run_hps: float = Field(default=1.5, gt=0, description="running from this speed, box-heights/s (no homography)")
    walk_mps: float = Field(default=0.4, gt=0, description="walking from this ground speed, m/s (with a homography)")
    run_mps: float = Field(default=2.5, gt=0, description="running from this ground speed, m/s (with a homography)")
    ground_units_per_m: float = Field(default=1.0, gt=0, description="homography ground units per metre")
    window_s: float = Field(default=1.0, gt=0, description="speed = slope of the box bottom-centre over this window")
    homographies: HomographyFiles = Field(default_factory=dict, description="camera id -> image->ground 3x3 file "
                                          "(ground units: ground_units_per_m)")

    @model_validator(mode="after")
    def _ordered(self) -> "MotionConfig":
        if self.run_hps <= self.walk_hps or self.run_mps <= self.walk_mps:
            raise ValueError("events.motion: running thresholds must be above the walking ones")
        return self


class EventsConfig(_Strict):
    """Per-view action events (pipeline/events/): hysteresis over action scores per (identity, camera)."""

    enabled: bool = Field(default=True, description="turn action scores into events (store, events.jsonl, MQTT)")
    source: Literal["auto", "model", "motion"] = Field(
        default="auto", description="auto: the Re-ID-AR action branch when the checkpoint has one, else motion")
    enter: float = Field(default=0.6, ge=0, le=1, description="an action starts when its smoothed score reaches this")
    exit: float = Field(default=0.4, ge=0, le=1, description="and ends when it falls below this")
    min_duration_s: float = Field(default=1.0, ge=0, description="shorter episodes are not reported")
    smoothing_s: float = Field(default=0.5, ge=0, description="time constant of the score's moving average (s)")
    track_end_s: float = Field(default=2.0, gt=0, description="a track unseen this long has ended (its events close)")
    motion: MotionConfig = Field(default_factory=MotionConfig)
    jsonl: bool = Field(default=True, description="write DIR/events.jsonl (one finished event per line)")
    mqtt_url: str | None = Field(default=None, description="publish events as JSON, e.g. mqtt://127.0.0.1:1883 "
                                 "(off when empty)")
    mqtt_topic: str = Field(default="mcsa/events", description="topic prefix: <topic>/<camera_id>")

    @model_validator(mode="after")
    def _ordered(self) -> "EventsConfig":
        if self.exit > self.enter:
            raise ValueError(f"events.exit ({self.exit}) must not be above events.enter ({self.enter})")
        return self


class StreamsConfig(_Strict):
    """How frames are read (see streams.StreamOptions)."""

    live_queue_size: int = Field(default=2, ge=1)
    file_queue_size: int = Field(default=16, ge=1)
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    read_timeout_s: float = Field(default=5.0, gt=0)
    connect_attempts: int = Field(default=3, ge=1)
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=8.0, gt=0)
    max_reconnects: int | None = Field(default=None, ge=0)


class StoreConfig(_Strict):
    """Where tracks and events are recorded."""

    url: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite:///<output>/events.db")
    batch_rows: int = Field(default=5000, ge=1, description="rows per write transaction")
    flush_interval_s: float = Field(default=1.0, gt=0, description="longest time rows wait before being written")
    thumbnails: bool = Field(default=True, description="keep each track's best view as a JPEG (track_thumbnails)")
    thumbnail_height: int = Field(default=128, ge=16, le=512, description="thumbnail height in px")
    ground_every_s: float | None = Field(default=0.2, gt=0, description="association.mode fused: store where each "
                                         "identity stands (ground_positions) at most once per this many seconds; "
                                         "null: not stored")

    @field_validator("url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        """A parseable SQLAlchemy URL (the error hides a password)."""
        if value is None:
            return value
        from sqlalchemy.engine import make_url

        try:
            make_url(value)
        except Exception:  # noqa: BLE001 - sqlalchemy raises ArgumentError/ValueError for malformed URLs
            raise ValueError("not a database URL (e.g. sqlite:///out/events.db or postgresql+psycopg://user@host/db)") from None
        return value


class OutputConfig(_Strict):
    """Files written under the output directory."""

    dir: str = "out"
    mot: bool = Field(default=True, description="write mot/<camera_id>.txt (MOTChallenge)")
    video: Annotated[Literal["off", "per_camera", "mosaic"], YAML_WORD] = Field(
        default="off", description="annotated video: video/<camera_id>.mp4, or one video/mosaic.mp4")
    video_fps: float | None = Field(default=None, gt=0, description="annotated video frame rate (default: camera's)")
    ground: bool = Field(default=True, description="association.mode fused: ground/tracks.csv (every identified "
                         "person's position in metres, per step) and ground/map.png (bird's-eye view of their paths "
                         "and of each camera's view of the floor)")
    overwrite: bool = Field(default=False, description="replace an earlier run's mot*/, video/ and ground/ files in "
                            "the same folder (default: refuse; the store and events.jsonl always keep every run)")


class RunConfig(_Strict):
    """Run-wide limits."""

    duration_s: float | None = Field(default=None, gt=0, description="stop the frame loop after this many seconds "
                                     "(counted from the first frame, not the models' start-up)")
    progress: bool = Field(default=True, description="progress bars for file cameras")
    overlap_detection: Annotated[Literal["auto", "on", "off"], YAML_WORD] = Field(
        default="auto", description="engine local: read and detect the next step's frames on a worker thread while "
        "this step is tracked and staged (outputs unchanged); auto = on; off: one after the other")
    engine: Literal["local", "ray"] = Field(default="local", description="local: one process; ray: one actor per "
                                            "camera and a Re-ID service on a Ray cluster (pipeline/engines/)")
    ray_address: str | None = Field(default=None, description="engine ray: cluster to join ('auto', "
                                    "'ray://host:10001', 'HOST:6379'); default: start a local one")
    ray_max_restarts: int = Field(default=3, ge=0, description="engine ray: restarts of a live camera's actor after "
                                  "it dies (a recorded file's camera is reported failed instead)")
    ray_watermark_wait_s: float = Field(default=0.5, gt=0, description="engine ray, live cameras: longest wait for "
                                        "a silent camera before the others' frames go on without it")
    ray_dashboard: bool = Field(default=False, description="engine ray: start the Ray dashboard with a local cluster")
    ray_stages: Literal["driver", "actor"] = Field(default="driver", description="engine ray: where the stages "
                                                  "after Re-ID (association .. store) run: in the driver, or in one "
                                                  "named Ray actor that builds them itself (docs/ray_engine.md)")


class SinkConfig(_Strict):
    """An extra stage after the built-in ones (before the store): a class registered with `@register_stage(name)`
    in `pipeline/sinks/` (found automatically) or in `module` (any importable module of yours)."""

    name: str = Field(description="the registered stage name, e.g. json_tracks")
    module: str | None = Field(default=None, description="module to import first (out-of-tree stages)")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the stage's from_config")


class AdaptMiningConfig(_Strict):
    """How `adapt` mines pseudo-identities from geometry and time (pipeline/adapt/mining.py): metres and seconds."""

    ground_units_per_m: float | None = Field(default=None, gt=0, description="homography ground units per metre "
                                             "(default: association.fusion.ground_units_per_m; EPFL files: 40)")
    link_m: float = Field(default=1.0, gt=0, description="two views' foot points of one person: median distance "
                          "at most this, m (overlapping EPFL views disagree by 0.5 m median)")
    ambiguity_m: float = Field(default=1.0, ge=0, description="a frame counts for a cross-view pair only when every "
                               "other person of either view is at least this much farther, m")
    min_together_s: float = Field(default=1.0, gt=0, description="a cross-view pair needs this long of unambiguous "
                                  "agreement, s")
    min_agree_frac: float = Field(default=0.6, gt=0, le=1, description="... and must be each other's nearest in this "
                                  "fraction of the moments both are seen")
    apart_m: float = Field(default=2.5, gt=0, description="two views' tracks seen together this far apart (median) "
                           "are different people, m")
    continuity_gap_s: float = Field(default=1.0, ge=0, description="a camera's track that starts within this long "
                                    "after another ended, near where it ended, continues it, s (0: off)")
    continuity_m: float = Field(default=0.7, ge=0, description="... within this distance plus max_speed_mps x gap")
    max_speed_mps: float = Field(default=2.0, gt=0, description="fastest walking speed assumed for continuity, m/s")
    person_height_m: float = Field(default=1.7, gt=0, description="without a homography distances are measured "
                                   "in box heights, one box height = this many metres")
    min_track_s: float = Field(default=0.4, ge=0, description="tracks shorter than this are ignored, s")
    cut_tracks: bool = Field(default=True, description="cut each camera's tracks into stretches of one person before "
                             "mining: where their person came within ambiguity_m of another of the camera's tracks "
                             "(those moments left out) and where the feet jump farther than continuity_m + "
                             "max_speed_mps x the time since the last box (a tracker swaps people only there)")
    exclusive_partners: bool = Field(default=True, description="a track with same-place-same-moment links to two or "
                                     "more tracks of one other camera that no continuation joins keeps none of them "
                                     "(one of the two trackers swapped people there)")
    min_cameras: int = Field(default=2, ge=1, description="an identity is trained on only when it was seen by this "
                             "many cameras (1: also single-camera identities; each may then be one person split in "
                             "several, which teaches the model to tell a person from themselves)")


class AdaptConfig(_Strict):
    """Site adaptation (`run_pipeline.py adapt`): mining, weak action labels, the split, the training recipe."""

    mining: AdaptMiningConfig = Field(default_factory=AdaptMiningConfig)
    recipe: str = Field(default="${REPO}/configs/adapt/omz0267.yaml", description="Re-ID-AR training config whose "
                        "model/loss/train sections are the recipe (data paths are filled in by adapt)")
    val_fraction: float = Field(default=0.2, ge=0, lt=1, description="the last part of the recording (in time) held "
                                "out for validation, never trained on")
    standing_mps: float = Field(default=0.3, gt=0, description="weak action labels: below this ground speed a "
                                "person is standing, m/s")
    running_mps: float = Field(default=2.5, gt=0, description="... from this speed running (walking in between)")
    speed_window_s: float = Field(default=1.0, gt=0, description="speed = displacement over this window, s")
    frame_step_s: float = Field(default=0.12, gt=0, description="one crop every this long of a track, s")
    clip_len_s: float = Field(default=2.0, gt=0, description="training tracklets are cut every this long, s")
    min_height_px: int = Field(default=40, ge=0, description="boxes lower than this are not cropped, px")
    max_minutes: float = Field(default=20.0, gt=0, description="training stops (with a checkpoint) after this long")

    @model_validator(mode="after")
    def _ordered(self) -> "AdaptConfig":
        if self.running_mps <= self.standing_mps:
            raise ValueError("adapt: running_mps must be above standing_mps")
        return self


class PipelineConfig(_Strict):
    """The whole pipeline configuration."""

    cameras: list[CameraConfig] = Field(min_length=1)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    reid: ReIDStageConfig = Field(default_factory=ReIDStageConfig)
    association: AssociationConfig = Field(default_factory=AssociationConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    streams: StreamsConfig = Field(default_factory=StreamsConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    sinks: list[SinkConfig] = Field(default_factory=list, description="extra stages/sinks, in this order")
    adapt: AdaptConfig = Field(default_factory=AdaptConfig, description="site adaptation (`run_pipeline.py adapt`)")

    @model_validator(mode="after")
    def _unique_ids(self) -> "PipelineConfig":
        ids = [c.id for c in self.cameras]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"camera ids must be unique; repeated: {', '.join(dupes)}")
        return self


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input")
        if isinstance(value, str):
            from streams.redact import redact_uri

            value = redact_uri(value)  # a malformed camera or database URL may hold a password
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        if e["type"] == "extra_forbidden":
            lines.append(f"{origin}: unknown key '{key}' (check the spelling; see README 'Config reference')")
        elif e["type"] == "missing":
            lines.append(f"{origin}: missing required key '{key}'")
        else:
            lines.append(f"{origin}: key '{key}' has bad value {shown}: {e['msg']}")
    return "\n".join(lines)


def parse_config(data: Any, origin: str = "config") -> PipelineConfig:
    """Validate a parsed mapping into a `PipelineConfig`, raising `ConfigError` with readable messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping with at least a 'cameras' list, got {type(data).__name__}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, origin)) from None


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (pass an existing YAML, e.g. configs/epfl_terrace.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    return parse_config(data, origin=str(path))


def parse_source_arg(text: str) -> CameraConfig:
    """Parse one `--source CAM_ID=URI` option (URI: file, rtsp:// URL, webcam index or image folder)."""
    cam_id, sep, uri = text.partition("=")
    if not sep or not cam_id or not uri or "://" in cam_id:
        raise ConfigError(f"--source {text!r}: expected CAM_ID=URI, e.g. --source cam1=video.mp4")
    source: str | int = int(uri) if uri.isdigit() else uri
    try:
        return CameraConfig(id=cam_id, source=source)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, f"--source {cam_id}")) from None


def config_from_sources(sources: list[str], base: PipelineConfig | None = None) -> PipelineConfig:
    """Build a config from repeated `--source CAM_ID=URI` options, over `base` (or the defaults)."""
    cameras = [parse_source_arg(s) for s in sources]
    data = base.model_dump() if base is not None else {}
    data["cameras"] = [c.model_dump() for c in cameras]
    return parse_config(data, origin="--source")


__all__ = [
    "CameraConfig",
    "ConfigError",
    "DetectorConfig",
    "PipelineConfig",
    "config_from_sources",
    "load_config",
    "parse_config",
    "shared_dir",
]
