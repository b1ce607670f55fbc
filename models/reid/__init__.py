"""Re-ID-AR: video person re-identification with action recognition (Alsehaim & Breckon, BMVC 2021)."""

from models.reid.backbones import BACKBONES, CheckpointError, build_backbone, feature_map_size
from models.reid.model import (
    ReIDAR,
    ReIDAROutput,
    ReIDARTrainOutput,
    build_reid_ar,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "BACKBONES", "CheckpointError", "build_backbone", "feature_map_size", "ReIDAR", "ReIDAROutput",
    "ReIDARTrainOutput", "build_reid_ar", "load_checkpoint", "save_checkpoint",
]
