"""Selective Two-step Classification (STC), the first of SRN's two ideas.

On the levels that detect small faces (STC levels, the three finest by
default) step 1 classifies the anchors from the C-features; anchors step 1
is confident are background leave step 2. In training they are ignored by
step 2's classification loss, which then spends its effort on the hard
negatives; in inference their score is 0, so they never become detections.
"""

from typing import Dict, Sequence, Tuple

import torch

from ..errors import require
from .levels import cat_levels

__all__ = ["SelectiveTwoStepClassification"]


class SelectiveTwoStepClassification:
    """Step 1's rejections, applied to step 2 in training and in inference."""

    def __init__(self, levels: Sequence[str], min_face_prob: float):
        """
        Args:
            levels: the STC levels, in pyramid order.
            min_face_prob: step 2 keeps an anchor whose step-1 face probability is
                at least this (MODEL.SRN.STC_MIN_FACE_PROB).
        """
        require(
            0.0 <= min_face_prob <= 1.0,
            "MODEL.SRN.STC_MIN_FACE_PROB",
            min_face_prob,
            "(argument stc_min_face_prob) is a probability and must lie in [0, 1] (0 keeps every anchor)",
        )
        self.levels = tuple(levels)
        self.min_face_prob = min_face_prob

    def keep(self, step1_logits: torch.Tensor) -> torch.Tensor:
        """Anchors that survive step 1.

        Args:
            step1_logits: (..., K) step-1 logits.
        Returns:
            bool tensor of shape (...).
        """
        face_prob = step1_logits.sigmoid().max(dim=-1).values
        return face_prob >= self.min_face_prob

    def ignore_rejected(
        self, step2_labels: Dict[str, torch.Tensor], step1_logits: Dict[str, torch.Tensor]
    ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """Training: step 2 ignores (label -1) the anchors step 1 rejects.

        Args:
            step2_labels: level -> (N, R_l) step-2 labels.
            step1_logits: STC level -> (N, R_l, K).
        Returns:
            level -> (N, R_l) labels, and the kept fraction of the STC levels' anchors (0-dim).
        """
        keep = {level: self.keep(step1_logits[level].detach()) for level in self.levels}
        kept_fraction = (
            cat_levels(keep, self.levels).float().mean()
            if keep
            else next(iter(step2_labels.values())).new_ones((), dtype=torch.float32)
        )
        labels = {
            level: x.masked_fill(~keep[level], -1) if level in keep else x
            for level, x in step2_labels.items()
        }
        return labels, kept_fraction

    def scores(
        self, step2_logits: Dict[str, torch.Tensor], step1_logits: Dict[str, torch.Tensor]
    ) -> Dict[str, torch.Tensor]:
        """Inference: step-2 probabilities, 0 where step 1 rejects the anchor.

        Args:
            step2_logits: level -> (..., R_l, K); step1_logits: STC level -> (..., R_l, K).
        Returns:
            level -> (..., R_l, K) scores.
        """
        scores = {level: logits.sigmoid() for level, logits in step2_logits.items()}
        for level in self.levels:
            scores[level] = scores[level] * self.keep(step1_logits[level])[..., None]
        return scores
