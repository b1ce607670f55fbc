"""The Re-ID stage of the live pipeline: tracklet crops -> clips -> batched Re-ID-AR inference -> track appearance.

  TrackletCropper (one per camera)  crops of confirmed tracks in bounded ring buffers; emits `ClipRequest`s
  ReIDBatcher (one for all cameras) one queue, GPU/CPU batches, results routed back by (camera, track)
  TrackAppearance (one per camera)  running quality-weighted embedding and latest action probabilities per track
  ClipEncoder                       the Re-ID-AR model behind a uint8-clip interface
"""

from pipeline.reid.appearance import TrackAppearance
from pipeline.reid.batcher import ReIDBatcher
from pipeline.reid.clips import AppearanceUpdate, ClipRequest, ClipResult
from pipeline.reid.cropper import TrackletCropper
from pipeline.reid.encoder import ClipEncoder, ReIDLoadError
from pipeline.reid.stage import ReIDStage

__all__ = [
    "AppearanceUpdate", "ClipEncoder", "ClipRequest", "ClipResult", "ReIDBatcher", "ReIDLoadError", "ReIDStage", "TrackAppearance",
    "TrackletCropper",
]
