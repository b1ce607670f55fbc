"""Ground-plane fusion for overlapping cameras (`association.mode: fused`).

Every view's detections become ground points in metres (`ground`), the simultaneous observations of one person in
the overlapping views are gathered into one ground measurement, and people are tracked once on the ground plane
(`tracker`, constant-velocity Kalman filter in metres): one identity per ground track, shared by every view that
sees it. `calibration` fits a camera's image -> ground homography from point pairs. `FusedAssociator` is the small
pure API; `stage` wires it into a pipeline run; `hindsight` is the offline pass (recorded files).
"""

from pipeline.fusion.associator import FusedAssociator, FusionParams, FusedOutput
from pipeline.fusion.calibration import CalibrationError, fit_homography, load_point_pairs, reprojection_errors_m

__all__ = ["FusedAssociator", "FusionParams", "FusedOutput", "CalibrationError", "fit_homography", "load_point_pairs",
           "reprojection_errors_m"]
