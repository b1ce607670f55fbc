"""Typed Re-ID-AR configuration (YAML -> pydantic). See configs/reid_ar_*.yaml for commented examples."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.paths import expand_path


class ReIDConfigError(ValueError):
    """A Re-ID config file is invalid; the message names the key and what is expected."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ModelSection(_Strict):
    backbone: str = Field(default="resnet50_ibn_a", description="registered backbone name")
    pretrained: str | None = Field(
        default=None, description="local backbone weights (ImageNet / torchreid); onnx_frame: the .onnx re-id model")
    num_classes: int | None = Field(default=None, description="identities; default: from the training set")
    temporal_attention: bool = True
    last_stride: int = Field(default=1, ge=1, le=2)
    action_hidden: int = 512
    action_dropout: float = 0.25
    freeze: list[str] = Field(default=[], description="backbone submodules kept frozen (e.g. conv1, layer1.0; "
                              "onnx_frame: net, a node name, until:NODE)")
    embedding: Literal["bn", "global"] = Field(
        default="bn", description="inference embedding: the BNNeck output (bn) or the attention-pooled feature before it")
    normalize_embedding: bool = Field(
        default=False, description="L2-normalise the embedding (per clip and per tracklet): cosine retrieval")

    @field_validator("pretrained")
    @classmethod
    def _expand(cls, v: str | None) -> str | None:
        return expand_path(v) if v else v


class AugmentSection(_Strict):
    """Clip-level photometric / resolution augmentations of training clips (pipeline/reid_data/transforms.py
    ClipAugment): one draw per clip, the same for all its frames. All off by default (the paper's recipe)."""

    jitter_prob: float = Field(default=0.0, ge=0, le=1, description="probability that a clip gets colour jitter")
    brightness: float = Field(default=0.0, ge=0, le=1, description="brightness factor from [1 - x, 1 + x]")
    contrast: float = Field(default=0.0, ge=0, le=1, description="contrast factor from [1 - x, 1 + x]")
    saturation: float = Field(default=0.0, ge=0, le=1, description="saturation factor from [1 - x, 1 + x]")
    hue: float = Field(default=0.0, ge=0, le=0.5, description="hue shift from [-x, x] turns")
    channel_gain: float = Field(default=0.0, ge=0, le=1, description="per-channel (R, G, B) gain from [1 - x, 1 + x]")
    grayscale_prob: float = Field(default=0.0, ge=0, le=1, description="probability of a grayscale clip")
    lowres_prob: float = Field(default=0.0, ge=0, le=1, description="probability of a low-resolution round trip")
    lowres_scale: tuple[float, float] = Field(default=(0.25, 0.75), description="shrink factor range (of the input size)")

    @field_validator("lowres_scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("lowres_scale must be (lo, hi) with 0 < lo <= hi <= 1")
        return v


class DataSection(_Strict):
    format: Literal["mars", "lpw", "tracklets"] = "tracklets"
    root: str = Field(description="dataset root folder")
    test_root: str | None = Field(default=None, description="separate root for the test split (tracklets format)")
    input_size: tuple[int, int] = (224, 112)
    seq_len: int = Field(default=4, ge=1)
    train_sampling: Literal["restricted_random", "random", "evenly"] = "restricted_random"
    test_sampling: Literal["dense", "evenly"] = "dense"
    test_max_clips: int | None = Field(default=None, description="cap on dense clips per tracklet")
    test_clip_select: Literal["evenly", "first"] = Field(
        default="evenly", description="which dense clips the cap keeps: evenly spread, or the first ones (official)")
    p: int = Field(default=8, ge=1, description="identities per batch")
    k: int = Field(default=4, ge=1, description="tracklets per identity per batch")
    epoch: Literal["tracklets", "identities"] = Field(
        default="tracklets",
        description="what one sampler epoch covers: every training tracklet once (in chunks of K per identity), or "
                    "every identity once with K of its tracklets (the official code: ~39 iterations on MARS)")
    num_workers: int = 2
    flip_prob: float = 0.5
    pad: int = 10
    erase_prob: float = 0.5
    spatial_augment: Literal["clip", "frame"] = Field(
        default="clip", description="flip and pad+crop drawn once per clip, or for each frame (official)")
    erase_fill: Literal["zero", "mean_values"] = Field(
        default="zero",
        description="random-erasing fill in the normalised image: 0 (= the ImageNet mean colour), or the values "
                    "(0.485, 0.456, 0.406) written into the normalised tensor (official)")
    erase_attempts: int = Field(
        default=100, ge=1, description="tries to place an erasing rectangle that fits (official: 1)")
    resize: Literal["bilinear", "bicubic"] = Field(
        default="bilinear", description="interpolation of the resize to input_size, train and test (official: bicubic)")
    augment: AugmentSection = AugmentSection()
    min_frames: int = 1
    # MARS: junk tracklets (person id -1) in the test gallery: dropped (the MARS protocol and the official code) or kept
    gallery_junk: Literal["drop", "keep"] = "drop"
    # MARS: action label files parallel to info/train_name.txt / test_name.txt (relative to root or absolute)
    action_file_train: str | None = None
    action_file_test: str | None = None
    # LPW
    lpw_train_scenes: list[str] = ["scen2", "scen3"]
    lpw_test_scene: str = "scen1"
    lpw_query_view: str = "view2"
    # evaluation split for the tracklets format
    query_camera: str | None = None
    gallery_camera: str | None = None
    # validation (model selection without the test set), tracklets format: these pids of split `train` are taken
    # out of training; each person's tracklets are split in time into two pseudo-cameras (query = earlier half,
    # gallery = later half, `val_gap` tracklets dropped between them)
    val_ids: list[int] = Field(default=[], description="training pids held out for validation")
    val_gap: int = Field(default=1, ge=0, description="tracklets dropped between the query and gallery halves")

    @field_validator("root", "test_root", "action_file_train", "action_file_test")
    @classmethod
    def _expand(cls, v: str | None) -> str | None:
        return expand_path(v) if v else v


class LossSection(_Strict):
    label_smooth: float = 0.1
    label_smooth_classes: Literal["identities", "batch"] = Field(
        default="identities",
        description="K of eps / K in the smoothed target: the number of identities (correct), or the batch size "
                    "(the official code's bug: much stronger smoothing; only to reproduce its numbers)")
    ranked_margin: float = 1.3
    ranked_alpha: float = 2.0
    ranked_t: float = 1.0
    ranked_normalize: bool = True
    ranked_positive_norm: Literal["nontrivial", "all"] = Field(
        default="nontrivial", description="divide the positive term by the non-trivial positives (RLL paper) or by all "
                                          "positives (official code)")
    ranked_weight_grad: bool = Field(
        default=False, description="gradient through the negative weights exp(t (alpha - d)) (official code: yes)")
    ranked_feature: Literal["global", "bn"] = Field(
        default="global", description="feature of the ranked list loss: pooled (global) or BNNeck (bn, official)")
    center_feature: Literal["global", "bn"] = Field(
        default="global", description="feature of the center loss: pooled (global) or BNNeck (bn, official)")
    attention_form: Literal["softmax_mass", "scores"] = Field(
        default="softmax_mass",
        description="attention loss on erased frames: post-softmax mass on clips with erased and clean frames, or "
                    "the pre-softmax (ReLU) scores of erased frames averaged over all clips (official)")
    w_id: float = 1.0
    w_ranked: float = 1.0
    w_center: float = 0.0005
    w_attention: float = 1.0
    w_action: float = 1.0
    w_action_center: float = 0.0005


class TrainSection(_Strict):
    epochs: int = 120
    iters_per_epoch: int | None = Field(default=None, description="default: one pass of the P x K sampler")
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    center_lr: float = 0.5
    warmup_epochs: int = 10
    warmup_factor: float = 0.01
    milestones: list[int] = [40, 70]
    gamma: float = 0.1
    checkpoint_every: int = 10
    eval_every: int = 0
    seed: int = 1
    device: str = "auto"
    amp: bool = Field(
        default=False,
        description="CUDA only: float16 autocast of the model's forward with a gradient scaler (losses in float32); "
                    "ignored with a warning on other devices. The official code trains in float32")
    max_minutes: float | None = Field(default=None, description="stop (and checkpoint) after this wall time")


class ReIDTrainingConfig(_Strict):
    name: str = "reid_ar"
    actions: list[str] = Field(default=[], description="action names, in the 1-based order of the label files")
    model: ModelSection = ModelSection()
    data: DataSection
    loss: LossSection = LossSection()
    train: TrainSection = TrainSection()


def load_reid_config(path: str | Path) -> ReIDTrainingConfig:
    path = Path(path)
    if not path.is_file():
        raise ReIDConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ReIDConfigError(f"{path}: invalid YAML ({exc})") from None
    try:
        return ReIDTrainingConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()]
        raise ReIDConfigError("\n".join(lines)) from None
