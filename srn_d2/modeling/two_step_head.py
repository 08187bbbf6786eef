"""Runs SRN's shared head over both feature pyramids, each step only where it is needed."""
from typing import Dict, NamedTuple, Optional

import torch
from torch import nn

from .levels import LevelPlan


class TwoStepPredictions(NamedTuple):
    """The head's outputs, per level name ("p2".."p7").

    Maps are (N, A * K, H, W) for logits, (N, A * 4, H, W) for deltas and
    (N, A * 10, H, W) for landmark deltas, or, once flattened by the
    meta-architecture, (N, H * W * A, K), (N, H * W * A, 4) and (N, H * W * A, 10).
    """

    step1_logits: Dict[str, torch.Tensor]  # STC levels: step-1 classification from C-features
    step1_deltas: Dict[str, torch.Tensor]  # STR levels: step-1 regression from C-features
    step2_logits: Dict[str, torch.Tensor]  # every level, from P-features
    step2_deltas: Dict[str, torch.Tensor]  # every level, from P-features
    step2_landmarks: Optional[Dict[str, torch.Tensor]] = None  # every level, with landmarks; else None


class SelectiveTwoStepHead(nn.Module):
    """Applies one shared head to the C-features (step 1) and P-features (step 2).

    Step 1 feeds only STC classification and STR regression, so its
    classification tower runs on the STC levels alone and its box tower on the
    STR levels alone; step 2 runs both towers on every level.
    """

    def __init__(self, head: nn.Module, plan: LevelPlan):
        """
        Args:
            head: the shared head (``classify`` and ``regress`` on lists of maps).
            plan: which levels take which step.
        """
        super().__init__()
        self.shared = head
        self.plan = plan

    @property
    def num_landmarks(self) -> int:
        """Points per face the shared head predicts in step 2 (0: none, or a head without the option)."""
        return getattr(self.shared, "num_landmarks", 0)

    def forward(self, features: Dict[str, torch.Tensor]) -> TwoStepPredictions:
        """
        Args:
            features: the backbone's outputs: "c*" C-features of the plan's step-1
                levels and "p*" P-features of every level.
        """
        plan = self.plan

        def run(tower, levels, step1: bool) -> Dict[str, torch.Tensor]:
            maps = [features[plan.step1_feature(level) if step1 else level] for level in levels]
            return dict(zip(levels, tower(maps)))

        step1_logits = run(self.shared.classify, plan.stc_levels, step1=True)
        step1_deltas = run(self.shared.regress, plan.str_levels, step1=True)
        step2_logits = run(self.shared.classify, plan.levels, step1=False)
        step2_landmarks = None
        if self.num_landmarks:
            deltas, landmarks = self.shared.regress_with_landmarks([features[level] for level in plan.levels])
            step2_deltas, step2_landmarks = dict(zip(plan.levels, deltas)), dict(zip(plan.levels, landmarks))
        else:
            step2_deltas = run(self.shared.regress, plan.levels, step1=False)
        return TwoStepPredictions(step1_logits, step1_deltas, step2_logits, step2_deltas, step2_landmarks)
