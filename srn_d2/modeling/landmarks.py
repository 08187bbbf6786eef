"""Five facial landmarks per anchor: their coding relative to an anchor, and their loss.

A landmark is coded as RetinaFace codes it, by its offset from the anchor's
centre in units of the anchor's width and height; here the offsets are
multiplied by the box coding's centre weights (``MODEL.SRN.BBOX_REG_WEIGHTS``
dx, dy), so that a landmark at a box's centre and that box's centre have the
same targets. On STR levels the anchor is step 2's, refined by step 1.
"""

from typing import Optional, Tuple

import torch
from fvcore.nn import smooth_l1_loss

__all__ = ["LandmarkCoder", "landmark_loss"]


class LandmarkCoder:
    """Encodes K points relative to anchors and decodes them back."""

    def __init__(self, weights: Tuple[float, float]):
        """
        Args:
            weights: (wx, wy), the scale of the x and y offsets (the box coding's dx, dy weights).
        """
        self.weights = weights

    def _centres_and_sizes(self, anchors: torch.Tensor):
        """(..., 1, 2) centres and sizes of (..., 4) XYXY anchors, float32."""
        anchors = anchors.float()
        sizes = anchors[..., 2:] - anchors[..., :2]
        centres = anchors[..., :2] + 0.5 * sizes
        return centres.unsqueeze(-2), sizes.unsqueeze(-2)

    def get_deltas(self, anchors: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """
        Args:
            anchors: (..., 4) XYXY.
            points: (..., K, 2) x, y.
        Returns:
            (..., 2K) offsets, point by point: dx1, dy1, dx2, dy2, ...
        """
        centres, sizes = self._centres_and_sizes(anchors)
        deltas = (
            (points.float() - centres)
            / sizes
            * points.new_tensor(self.weights, dtype=torch.float32)
        )
        return deltas.flatten(-2)

    def apply_deltas(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """
        Args:
            deltas: (..., 2K), as :meth:`get_deltas` returns.
            anchors: (..., 4) XYXY, broadcastable to ``deltas``' leading dimensions.
        Returns:
            (..., K, 2) points.
        """
        centres, sizes = self._centres_and_sizes(anchors)
        deltas = deltas.float()
        # Split by stride rather than reshaped to (..., -1, 2): exported, a reshape with an inferred
        # dimension cannot resolve on zero candidates, and a faceless image would crash the graph.
        offsets = torch.stack((deltas[..., 0::2], deltas[..., 1::2]), dim=-1)
        return offsets / deltas.new_tensor(self.weights) * sizes + centres


def landmark_loss(
    deltas: torch.Tensor,
    anchors: torch.Tensor,
    gt_keypoints: torch.Tensor,
    coder: LandmarkCoder,
    beta: float,
    trained: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Smooth L1 summed over the annotated points' coordinates of the trained anchors.

    Args:
        deltas: (..., 2K) predicted offsets of the anchors.
        anchors: (..., 4) those anchors.
        gt_keypoints: (..., K, 3) their faces' keypoints; points with visibility 0
            (not annotated) add nothing, visible and occluded points count alike.
        coder: the landmark coding.
        beta: the smooth L1 transition (0: L1).
        trained: (...) bool, the anchors that count; None: every anchor.
    """
    target = coder.get_deltas(anchors, gt_keypoints[..., :2])
    annotated = gt_keypoints[..., 2] > 0
    if trained is not None:
        annotated = annotated & trained[..., None]
    loss = smooth_l1_loss(deltas.float(), target, beta=beta, reduction="none")
    # A mask, not a selection: the number of annotated points is never read on the host.
    return torch.where(annotated.repeat_interleave(2, dim=-1), loss, 0.0).sum()
