"""Runs SRN's shared head over both feature pyramids, each step only where it is needed."""

from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

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
    step2_landmarks: Optional[Dict[str, torch.Tensor]] = (
        None  # every level, with landmarks; else None
    )


class SelectiveTwoStepHead(nn.Module):
    """Applies one shared head to the C-features (step 1) and P-features (step 2).

    Step 1 feeds only STC classification and STR regression, so its
    classification tower runs on the STC levels alone and its box tower on the
    STR levels alone; step 2 runs both towers on every level.

    In training, a tower runs once on a level's C- and P-features stacked along
    the batch (6 tower runs fewer of 18 with the default levels: a third fewer
    kernels to launch), unless the head holds a batch normalization, whose
    statistics would then mix the two. Inference runs each map alone, so that
    its numbers do not depend on the batch arithmetic.
    """

    def __init__(self, head: nn.Module, plan: LevelPlan):
        """
        Args:
            head: the shared head (``classify``, ``regress`` and, with landmarks,
                ``regress_with_landmarks`` on lists of maps).
            plan: which levels take which step.
        """
        super().__init__()
        self.shared = head
        self.plan = plan
        self._batch_statistics = any(isinstance(m, _BatchNorm) for m in head.modules())

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
        shared = self.shared
        step1_logits, (step2_logits,) = self._run(
            shared.classify, shared.classify, features, plan.stc_levels
        )
        if self.num_landmarks:
            step1_deltas, (step2_deltas, step2_landmarks) = self._run(
                shared.regress_with_landmarks, shared.regress, features, plan.str_levels
            )
        else:
            step1_deltas, (step2_deltas,) = self._run(
                shared.regress, shared.regress, features, plan.str_levels
            )
            step2_landmarks = None
        return TwoStepPredictions(
            step1_logits, step1_deltas, step2_logits, step2_deltas, step2_landmarks
        )

    def _run(
        self,
        tower: Callable,
        step1_tower: Callable,
        features: Dict[str, torch.Tensor],
        step1_levels: Tuple[str, ...],
    ):
        """One tower of the shared head on step 1's ``step1_levels`` (C-features) and on every level
        (P-features); ``step1_tower`` gives step 1's output alone, for maps not stacked with step 2's.

        Returns:
            step 1's first output by level, and step 2's outputs (a tuple: the tower's outputs, each
            by level).
        """
        plan = self.plan
        joint = step1_levels if self.training and not self._batch_statistics else ()
        maps = [
            torch.cat([features[plan.step1_feature(level)], features[level]])
            if level in joint
            else features[level]
            for level in plan.levels
        ]
        outputs = self._as_tuple(tower(maps))
        num_images = features[plan.levels[0]].shape[0]
        step2 = tuple(
            {
                level: out[num_images:] if level in joint else out
                for level, out in zip(plan.levels, maps_out)
            }
            for maps_out in outputs
        )
        step1 = {
            level: out[:num_images] for level, out in zip(plan.levels, outputs[0]) if level in joint
        }
        alone = [level for level in step1_levels if level not in joint]
        if alone:
            step1.update(
                zip(alone, step1_tower([features[plan.step1_feature(level)] for level in alone]))
            )
        return {level: step1[level] for level in step1_levels}, step2

    @staticmethod
    def _as_tuple(outputs) -> tuple:
        """A tower's outputs as a tuple of per-map lists (``regress_with_landmarks`` gives two)."""
        return tuple(outputs) if isinstance(outputs, tuple) else (outputs,)
