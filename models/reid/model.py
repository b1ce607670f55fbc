"""Re-ID-AR (Alsehaim & Breckon, BMVC 2021): video person re-identification with action recognition.

clips (B, T, 3, H, W) -> backbone map per frame (B*T, C, h, w)
  temporal attention: Conv2d(C, 256, kernel=(h, w)) + ReLU -> (B, 256, T) -> Conv1d(256, 1, 3, pad 1) + ReLU -> softmax_T
  frame features: global average pool (+ the backbone's own per-frame `embed`, e.g. OSNet's fc) -> (B, T, D)
  clip feature f = sum_t a_t * frame_t                                       (B, D)   "global feature"
  IDN: BatchNorm1d bottleneck (bias frozen at 0) -> bias-free Linear classifier -> identity logits
  ARN: one block per action on the bottleneck feature:
       Linear(D, 512) -> BN -> LeakyReLU(0.1) -> Dropout(0.25) -> Linear(512, 1) -> sigmoid
Inference returns `ReIDAROutput(embedding, action_probs, attention)`; the embedding is the bottleneck feature
(`embedding="bn"`, default) or the attention-pooled feature before it (`"global"`), L2-normalised with
`normalize_embedding` (cosine retrieval; tracklet features are then re-normalised after averaging their clips).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.reid.backbones import CheckpointError, build_backbone, feature_map_size, read_torch_file
from models.reid.onnx_backbone import embedded_source


class ReIDAROutput(NamedTuple):
    embedding: torch.Tensor  # (B, D) bottleneck (or global) feature, compared with Euclidean distance
    action_probs: torch.Tensor  # (B, A) per-action sigmoid scores
    attention: torch.Tensor  # (B, T) temporal attention (sums to 1 over T)


@dataclass
class ReIDARTrainOutput:
    global_feature: torch.Tensor  # (B, D) attention-pooled clip feature (ranked list + center loss)
    bn_feature: torch.Tensor  # (B, D) bottleneck feature
    logits: torch.Tensor  # (B, num_classes)
    action_logits: torch.Tensor  # (B, A) pre-sigmoid action scores
    action_features: torch.Tensor  # (B, A, 512) hidden features of each action block (after LeakyReLU)
    attention: torch.Tensor  # (B, T) temporal attention after the softmax
    attention_scores: torch.Tensor | None = None  # (B, T) pre-softmax (ReLU) scores; None without attention


class ActionBlock(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 512, dropout: float = 0.25) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.act = nn.LeakyReLU(0.1)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.act(self.bn(self.fc1(x)))
        return self.fc2(self.dropout(hidden)).squeeze(1), hidden


class TemporalAttention(nn.Module):
    def __init__(self, channels: int, map_size: tuple[int, int], mid: int = 256) -> None:
        super().__init__()
        self.spatial_conv = nn.Conv2d(channels, mid, kernel_size=map_size)
        self.temporal_conv = nn.Conv1d(mid, 1, 3, padding=1)

    def forward(self, fmap: torch.Tensor, b: int, t: int) -> torch.Tensor:
        """fmap (B*T, C, h, w) -> attention (B, T), softmax over T."""
        return F.softmax(self.scores(fmap, b, t), dim=1)

    def scores(self, fmap: torch.Tensor, b: int, t: int) -> torch.Tensor:
        """fmap (B*T, C, h, w) -> pre-softmax attention scores (B, T), >= 0 (ReLU)."""
        a = F.relu(self.spatial_conv(fmap))  # (B*T, mid, 1, 1) when the map has the configured size
        a = a.mean(dim=(2, 3)) if a.shape[-1] * a.shape[-2] > 1 else a.flatten(1)  # robust to other input sizes
        a = a.view(b, t, -1).transpose(1, 2)  # (B, mid, T)
        return F.relu(self.temporal_conv(a)).squeeze(1)  # (B, T)


class ReIDAR(nn.Module):
    def __init__(
        self,
        backbone: str,
        num_classes: int,
        action_names: list[str] | tuple[str, ...] = (),
        input_size: tuple[int, int] = (224, 112),
        pretrained: str | Path | None = None,
        temporal_attention: bool = True,
        action_hidden: int = 512,
        action_dropout: float = 0.25,
        last_stride: int = 1,
        embedding: str = "bn",
        normalize_embedding: bool = False,
    ) -> None:
        super().__init__()
        if embedding not in ("bn", "global"):
            raise ValueError(f"embedding must be 'bn' or 'global', got {embedding!r}")
        self.embedding_kind = embedding
        self.normalize_embedding = bool(normalize_embedding)
        self.backbone_name = backbone
        self.num_classes = int(num_classes)
        self.action_names = list(action_names)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.last_stride = int(last_stride)
        self.backbone = build_backbone(backbone, pretrained=pretrained, last_stride=last_stride)
        self.map_size = feature_map_size(self.backbone, *self.input_size)
        self.feature_dim = int(self.backbone.feature_dim)
        self.use_attention = temporal_attention
        self.attention = TemporalAttention(self.backbone.out_channels, self.map_size) if temporal_attention else None
        self.bottleneck = nn.BatchNorm1d(self.feature_dim)
        self.bottleneck.bias.requires_grad_(False)  # IDN: bias frozen (BNNeck)
        nn.init.ones_(self.bottleneck.weight)
        nn.init.zeros_(self.bottleneck.bias)
        self.classifier = nn.Linear(self.feature_dim, max(self.num_classes, 1), bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)
        self.actions = nn.ModuleList(ActionBlock(self.feature_dim, action_hidden, action_dropout) for _ in self.action_names)

    @property
    def num_actions(self) -> int:
        return len(self.action_names)

    def frame_features(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (N, 3, H, W) -> (map (N, C, h, w), pooled and embedded features (N, D))."""
        fmap = self.backbone(frames)
        feat = F.adaptive_avg_pool2d(fmap, 1).flatten(1)
        embed = getattr(self.backbone, "embed", None)
        if embed is not None:
            feat = embed(feat)
        return fmap, feat

    def forward(self, clips: torch.Tensor) -> ReIDAROutput | ReIDARTrainOutput:
        if clips.dim() == 4:  # a single frame per sample
            clips = clips.unsqueeze(1)
        b, t = clips.shape[:2]
        fmap, feat = self.frame_features(clips.flatten(0, 1))
        feat = feat.view(b, t, -1)
        scores = None
        if self.attention is not None:
            scores = self.attention.scores(fmap, b, t)
            attention = F.softmax(scores, dim=1)
        else:
            attention = torch.full((b, t), 1.0 / t, device=clips.device, dtype=feat.dtype)
        global_feature = (attention.unsqueeze(2) * feat).sum(1)
        bn_feature = self.bottleneck(global_feature)
        if self.actions:
            outs = [block(bn_feature) for block in self.actions]
            action_logits = torch.stack([o[0] for o in outs], dim=1)
            action_features = torch.stack([o[1] for o in outs], dim=1)
        else:
            action_logits = bn_feature.new_zeros(b, 0)
            action_features = bn_feature.new_zeros(b, 0, 1)
        if not self.training:
            emb = bn_feature if self.embedding_kind == "bn" else global_feature
            if self.normalize_embedding:
                emb = F.normalize(emb, dim=1)
            return ReIDAROutput(emb, torch.sigmoid(action_logits), attention)
        return ReIDARTrainOutput(
            global_feature, bn_feature, self.classifier(bn_feature), action_logits, action_features, attention, scores
        )

    def config(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone_name,
            "num_classes": self.num_classes,
            "action_names": self.action_names,
            "input_size": list(self.input_size),
            "temporal_attention": self.use_attention,
            "last_stride": self.last_stride,
            "embedding": self.embedding_kind,
            "normalize_embedding": self.normalize_embedding,
            "action_hidden": self.actions[0].fc1.out_features if self.actions else 512,
            "action_dropout": self.actions[0].dropout.p if self.actions else 0.25,
        }


def build_reid_ar(cfg: Any, num_classes: int | None = None) -> ReIDAR:
    """Build from a `ReIDTrainingConfig` (see models/reid/config.py) or a plain dict with the `model` section's keys."""
    if hasattr(cfg, "model"):
        m = cfg.model
        kwargs = dict(
            backbone=m.backbone,
            num_classes=num_classes if num_classes is not None else (m.num_classes or 1),
            action_names=list(cfg.actions),
            input_size=tuple(cfg.data.input_size),
            pretrained=m.pretrained or None,
            temporal_attention=m.temporal_attention,
            action_hidden=m.action_hidden,
            action_dropout=m.action_dropout,
            last_stride=m.last_stride,
            embedding=m.embedding,
            normalize_embedding=m.normalize_embedding,
        )
    else:
        kwargs = dict(cfg)
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
    return ReIDAR(**kwargs)


def save_checkpoint(
    path: str | Path,
    model: ReIDAR,
    epoch: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    extra: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
) -> Path:
    """Write weights + model config + backbone name + action names + epoch (+ optimizer/scheduler for resume)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": "mcsa-reid-ar/1",
        "state_dict": model.state_dict(),
        "model_config": model.config(),
        "backbone": model.backbone_name,
        "action_names": model.action_names,
        "epoch": int(epoch),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "train_config": train_config,
        "extra": extra or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def is_reid_ar_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format", "").startswith("mcsa-reid-ar/")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[ReIDAR, dict[str, Any]]:
    """Rebuild the model from a checkpoint written by `save_checkpoint`; returns (model in eval mode, payload)."""
    payload = read_torch_file(path)
    if not is_reid_ar_checkpoint(payload):
        raise CheckpointError(
            f"{path}: not a Re-ID-AR checkpoint (no 'format: mcsa-reid-ar/...' entry); pass a file written by "
            "`run_pipeline.py train`, or raw backbone weights where a command accepts them"
        )
    source = embedded_source(payload["state_dict"])  # an onnx_frame backbone's graph travels in the checkpoint
    try:
        model = ReIDAR(**payload["model_config"], **({"pretrained": source} if source is not None else {}))
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match its own model config ({str(exc).splitlines()[0]})") from None
    model.to(map_location).eval()
    return model, payload


class InferenceHead(torch.nn.Module):
    """(B, T, 3, H, W) normalised float -> embedding (B, D) [, action_probs (B, A)]: the eval-mode graph that is
    compiled (OpenVINO at start-up) or exported (ONNX, OpenVINO IR, TensorRT)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.with_actions = bool(model.action_names)

    def forward(self, clips: torch.Tensor):
        out = self.model(clips)
        return (out.embedding, out.action_probs) if self.with_actions else out.embedding

