"""Receptive Field Enhancement (RFE): rectangular receptive fields for faces."""
import torch
from torch import nn

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

    def __init__(self, channels: int = 256, branch_channels: int = 64):
        super().__init__()
        self.branches = nn.ModuleList(
            _branch(channels, branch_channels, kernel, padding) for kernel, padding in _BRANCH_KERNELS
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(branch_channels * len(_BRANCH_KERNELS), channels, 1), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))
