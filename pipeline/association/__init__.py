"""Cross-camera identity association: a faiss gallery of global identities (`gallery`), camera topology and
homographies (`topology`), online matching of local tracks (`online`), offline refinement of recorded runs
(`offline`), and the run-level stage that ties them to the pipeline and its outputs (`stage`)."""

from pipeline.association.gallery import Gallery, VectorIndex
from pipeline.association.offline import refine
from pipeline.association.online import LinkEvent, OnlineAssociator, TrackState
from core.geometry import load_homography, to_ground
from pipeline.association.topology import CameraTopology, PairLink, Span, check_pair

__all__ = [
    "CameraTopology",
    "Gallery",
    "LinkEvent",
    "OnlineAssociator",
    "PairLink",
    "Span",
    "TrackState",
    "VectorIndex",
    "check_pair",
    "load_homography",
    "refine",
    "to_ground",
]
