"""Detections from one pyramid level's step-2 predictions, shared by SRN's inference
(``srn.py``: one image, a variable number of candidates) and the batched export
(``deploy/batched.py``: every image at once, a fixed number of slots).

Both select as Detectron2's ``DenseDetector._decode_per_level_predictions`` does
(the scores above the level's threshold, the best ``topk_candidates`` of them) and
decode the chosen anchors' boxes, and with landmarks the same anchors' points.
Shapes: R anchors on the level, K classes, L landmarks.
"""

from typing import Optional, Tuple, Union

import torch
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances

from .landmarks import LandmarkCoder

__all__ = ["capped", "decode_anchors", "decode_level"]


def capped(count: Union[int, torch.Tensor], cap: int) -> Union[int, torch.Tensor]:
    """``min(count, cap)``; ``count`` is a tensor when traced for export, and the cap then
    stays in the graph so that the exported model holds for every input size."""
    if isinstance(count, torch.Tensor):
        return torch.clamp(count, max=cap)
    return min(count, cap)


def decode_anchors(
    box2box_transform: Box2BoxTransform,
    landmark_coder: Optional[LandmarkCoder],
    anchors: torch.Tensor,
    deltas: torch.Tensor,
    landmark_deltas: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The chosen anchors' boxes and landmarks.

    Args:
        anchors: (..., 4) the chosen anchors; deltas: (..., 4) their box deltas;
        landmark_deltas: (..., 2 * L) their landmark deltas, or None.

    Returns:
        boxes (..., 4) x1 y1 x2 y2, and points (..., L, 2) or None.
    """
    boxes = box2box_transform.apply_deltas(deltas, anchors)
    if landmark_deltas is None:
        return boxes, None
    return boxes, landmark_coder.apply_deltas(landmark_deltas, anchors)


def decode_level(
    box2box_transform: Box2BoxTransform,
    landmark_coder: Optional[LandmarkCoder],
    anchors: torch.Tensor,
    scores: torch.Tensor,
    deltas: torch.Tensor,
    score_thresh: Union[float, torch.Tensor],
    topk_candidates: int,
    image_size: Tuple[int, int],
    landmark_deltas: Optional[torch.Tensor] = None,
) -> Instances:
    """One image's candidates on one level, step for step as Detectron2 selects them.

    Args:
        anchors: (R, 4); scores: (R, K); deltas: (R, 4); landmark_deltas: (R, 2 * L) or None.

    Returns:
        Instances with ``pred_boxes``, ``scores``, ``pred_classes`` and, with landmarks,
        ``pred_keypoints`` (M, L, 3): x, y and the face's score.
    """
    keep = scores > score_thresh
    candidates = torch.nonzero(keep)
    kept_scores, order = scores[keep].topk(capped(candidates.shape[0], topk_candidates))
    anchor_idxs, class_idxs = candidates[order].unbind(dim=1)
    boxes, points = decode_anchors(
        box2box_transform,
        landmark_coder,
        anchors[anchor_idxs],
        deltas[anchor_idxs],
        None if landmark_deltas is None else landmark_deltas[anchor_idxs],
    )
    decoded = Instances(
        image_size, pred_boxes=Boxes(boxes), scores=kept_scores, pred_classes=class_idxs
    )
    if points is not None:
        point_scores = kept_scores[:, None, None].expand(-1, points.shape[1], 1)
        decoded.pred_keypoints = torch.cat([points, point_scores.to(points.dtype)], dim=-1)
    return decoded
