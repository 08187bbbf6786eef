"""Selective Two-step Classification (STC), the first of SRN's two ideas.

On the levels that detect small faces (STC levels, the three finest by
default) step 1 classifies the anchors from the C-features; anchors step 1
is confident are background leave step 2. In training they are ignored by
step 2's classification loss, which then spends its effort on the hard
negatives; in inference their score is 0, so they never become detections.
"""
from typing import Dict, Sequence

import torch
from detectron2.utils.events import get_event_storage

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
    ) -> Dict[str, torch.Tensor]:
        """Training: step 2 ignores (label -1) the anchors step 1 rejects.

        Args:
            step2_labels: level -> (N, R_l) step-2 labels.
            step1_logits: STC level -> (N, R_l, K).
        Returns:
            level -> (N, R_l) labels; the kept fraction goes to the event storage.
        """
        keep = {level: self.keep(step1_logits[level].detach()) for level in self.levels}
        kept_fraction = cat_levels(keep, self.levels).float().mean().item() if keep else 1.0
        get_event_storage().put_scalar("stc_kept_fraction", kept_fraction)
        return {level: x.masked_fill(~keep[level], -1) if level in keep else x for level, x in step2_labels.items()}

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
