"""Runs SRN's shared head over both feature pyramids, each step only where it is needed."""
from typing import List, Sequence

import torch
from torch import nn


class SelectiveTwoStepHead(nn.Module):
    """Applies one shared head to the C-features (step 1) and P-features (step 2).

    Step 1 feeds only STC classification and STR regression, so its
    classification tower runs on the STC levels alone and its box tower on the
    STR levels alone; step 2 runs both towers on every level.
    """

    def __init__(self, head: nn.Module, stc_levels: Sequence[int], str_levels: Sequence[int]):
        """
        Args:
            head: the shared head (``classify`` and ``regress`` on lists of maps).
            stc_levels, str_levels: level indices (0 = finest) of STC and STR.
        """
        super().__init__()
        self.shared = head
        self.step1_levels = sorted(set(stc_levels) | set(str_levels))
        self.stc_positions = [self.step1_levels.index(i) for i in sorted(stc_levels)]
        self.str_positions = [self.step1_levels.index(i) for i in sorted(str_levels)]

    def forward(self, features: List[torch.Tensor]) -> List[List[torch.Tensor]]:
        """
        Args:
            features: the step-1 maps of ``step1_levels`` followed by the step-2 maps of all levels.

        Returns:
            [step-1 logits on STC levels, step-1 deltas on STR levels,
             step-2 logits on all levels, step-2 deltas on all levels],
            each a list of (N, A*K or A*4, H, W) maps.
        """
        step1, step2 = features[: len(self.step1_levels)], features[len(self.step1_levels) :]
        return [
            self.shared.classify([step1[i] for i in self.stc_positions]),
            self.shared.regress([step1[i] for i in self.str_positions]),
            self.shared.classify(step2),
            self.shared.regress(step2),
        ]
