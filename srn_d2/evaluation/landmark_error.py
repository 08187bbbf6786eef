"""Landmark error of detected faces: normalized mean error (NME) over matched true positives.

A face with annotated landmarks is paired with the highest-scoring detection
whose best face, by the WIDER FACE protocol's IoU, it is at IoU >= 0.5. Its
error is the mean distance of the annotated points to the predicted ones,
divided by sqrt(w * h) of the face's box: the box size, not the inter-ocular
distance, because profile faces (many in WIDER FACE) have their eyes nearly
on top of each other. Faces with landmarks that no detection pairs with are
counted as missed, not scored. numpy only, as the rest of the WIDER FACE evaluation.
"""

from typing import Dict, Tuple

import numpy as np

from .widerface_protocol import best_overlaps

__all__ = ["NME_THRESHOLDS", "face_landmark_errors", "landmark_metrics"]

# Shares of faces under these errors are reported beside the mean.
NME_THRESHOLDS = (0.05, 0.1)


def face_landmark_errors(
    pred_xywhs: np.ndarray,
    pred_points: np.ndarray,
    gt_xywh: np.ndarray,
    gt_keypoints: np.ndarray,
    iou_threshold: float = 0.5,
) -> Tuple[np.ndarray, int]:
    """The errors of one image's faces with landmarks, and how many of them no detection pairs with.

    Args:
        pred_xywhs: (n, 5) detections x, y, w, h, score.
        pred_points: (n, K, 2) their points.
        gt_xywh: (m, 4) faces.
        gt_keypoints: (m, K, 3) their points, Detectron2 visibility (0: not annotated).
    Returns:
        errors: (f,) NME of each paired face, in units of its box size; missed: faces with
        landmarks left unpaired.
    """
    annotated = gt_keypoints[..., 2] > 0
    with_landmarks = annotated.any(axis=1)
    if len(pred_xywhs) == 0 or len(gt_xywh) == 0:
        return np.zeros(0), int(with_landmarks.sum())
    best_face, best_iou = best_overlaps(pred_xywhs[:, :4], gt_xywh)
    candidates = np.flatnonzero(best_iou >= iou_threshold)
    candidates = candidates[np.argsort(-pred_xywhs[candidates, 4], kind="stable")]
    faces, first = np.unique(best_face[candidates], return_index=True)
    detections = candidates[first]
    scored = with_landmarks[faces]
    faces, detections = faces[scored], detections[scored]
    distances = np.linalg.norm(pred_points[detections] - gt_keypoints[faces, :, :2], axis=-1)
    mask = annotated[faces]
    mean_distance = (distances * mask).sum(axis=1) / mask.sum(axis=1)
    sizes = np.sqrt(gt_xywh[faces, 2] * gt_xywh[faces, 3])
    return mean_distance / sizes, int(with_landmarks.sum()) - len(faces)


def landmark_metrics(errors: np.ndarray, missed: int) -> Dict[str, float]:
    """Mean NME and the share of faces under each of :data:`NME_THRESHOLDS`, in %; the counts."""
    errors = np.asarray(errors, dtype=np.float64)
    metrics = {"NME": 100.0 * float(errors.mean()) if len(errors) else float("nan")}
    for threshold in NME_THRESHOLDS:
        metrics[f"NME<{threshold:g}"] = (
            100.0 * float((errors < threshold).mean()) if len(errors) else float("nan")
        )
    metrics["landmark_faces"] = float(len(errors))
    metrics["landmark_faces_missed"] = float(missed)
    return metrics
