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

    def __init__(
        self,
        head: nn.Module,
        num_levels: int,
        stc_levels: Sequence[int],
        str_levels: Sequence[int],
    ):
        super().__init__()
        self.shared = head
        self.num_levels = num_levels
        self.stc_levels = list(stc_levels)
        self.str_levels = list(str_levels)

    def forward(self, features: List[torch.Tensor]) -> List[List[torch.Tensor]]:
        """
        Args:
            features: the ``num_levels`` step-1 maps followed by the ``num_levels`` step-2 maps.

        Returns:
            [step-1 logits on STC levels, step-1 deltas on STR levels,
             step-2 logits on all levels, step-2 deltas on all levels],
            each a list of (N, A*K or A*4, H, W) maps.
        """
        step1, step2 = features[: self.num_levels], features[self.num_levels :]
        return [
            self.shared.classify([step1[i] for i in self.stc_levels]),
            self.shared.regress([step1[i] for i in self.str_levels]),
            self.shared.classify(step2),
            self.shared.regress(step2),
        ]
