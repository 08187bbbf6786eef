"""Selective Two-step Regression (STR), the second of SRN's two ideas.

On the levels that detect large faces (STR levels, the three coarsest by
default) step 1 regresses the anchors from the C-features, and step 2
matches, regresses and decodes against those refined anchors instead of the
grid anchors. Refined anchors fit large faces better, which raises the IoU of
step 2's boxes; on small faces the paper finds the refinement hurts, hence
"selective".
"""

from typing import Dict, Sequence

import torch

from .box_regression import SingleBoxTransform

__all__ = ["SelectiveTwoStepRegression"]


class SelectiveTwoStepRegression:
    """The anchors of step 2: grid anchors moved by step 1's deltas on the STR levels."""

    def __init__(self, levels: Sequence[str], box2box_transform: SingleBoxTransform):
        """
        Args:
            levels: the STR levels, in pyramid order.
            box2box_transform: the box coder of step 1's deltas (one box per anchor).
        """
        self.levels = tuple(levels)
        self.box2box_transform = box2box_transform

    def refine(self, step1_deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Anchors moved by their step-1 deltas.

        Args:
            step1_deltas: (..., R, 4); anchors: (R, 4) or (..., R, 4).
        Returns:
            (..., R, 4) refined anchors.
        """
        return self.box2box_transform.apply_deltas(step1_deltas, anchors)

    def step2_anchors(
        self, anchors: Dict[str, torch.Tensor], step1_deltas: Dict[str, torch.Tensor]
    ) -> Dict[str, torch.Tensor]:
        """The anchors step 2 classifies and regresses from, level by level.

        Args:
            anchors: level -> (R_l, 4) grid anchors, every level.
            step1_deltas: STR level -> (..., R_l, 4) step-1 deltas (detached in training).
        Returns:
            level -> (R_l, 4) grid anchors, or (..., R_l, 4) refined ones on STR levels.
        """
        if not self.levels:
            return dict(anchors)
        # Every STR level refined in one call: a few large kernels rather than a few per level.
        sizes = [anchors[level].shape[-2] for level in self.levels]
        deltas = torch.cat([step1_deltas[level] for level in self.levels], dim=-2)
        refined = self.refine(deltas, torch.cat([anchors[level] for level in self.levels])).split(
            sizes, -2
        )
        refined = dict(zip(self.levels, refined))
        return {level: refined.get(level, boxes) for level, boxes in anchors.items()}
