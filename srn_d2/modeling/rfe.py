"""Receptive Field Enhancement (RFE): rectangular receptive fields for faces."""

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

# (kernel, padding) of each branch's middle conv: wide, tall, and their smaller twins.
_BRANCH_KERNELS = (((1, 5), (0, 2)), ((5, 1), (2, 0)), ((1, 3), (0, 1)), ((3, 1), (1, 0)))


def _branch(channels: int, branch_channels: int, kernel, padding) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, branch_channels, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(branch_channels, branch_channels, kernel, padding=padding),
        nn.ReLU(inplace=True),
        nn.Conv2d(branch_channels, branch_channels, 1),
        nn.ReLU(inplace=True),
    )


class RFE(nn.Module):
    """Four 1xk / kx1 branches, concatenated, fused by a 1x1 conv, plus the input."""

    def __init__(self, channels: int = 256, branch_channels: int = 64, recompute: bool = False):
        """
        Args:
            channels: input and output channels.
            branch_channels: channels inside each branch.
            recompute: in training, keep only the block's input for backward and
                recompute its branches there. They would keep about 5x the
                input's size of activations, for a forward that costs less than
                half a 3x3 conv of the head.
        """
        super().__init__()
        self.branches = nn.ModuleList(
            _branch(channels, branch_channels, kernel, padding)
            for kernel, padding in _BRANCH_KERNELS
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(branch_channels * len(_BRANCH_KERNELS), channels, 1), nn.ReLU(inplace=True)
        )
        self.recompute = recompute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.recompute and torch.is_grad_enabled():
            return x + checkpoint(self._enhance, x, use_reentrant=False)
        return x + self._enhance(x)

    def _enhance(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))
