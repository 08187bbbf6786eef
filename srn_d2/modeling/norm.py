"""Normalization layers by config name: Detectron2's :func:`get_norm`, with one change to "GN"."""

import math

import torch
from detectron2.layers import get_norm as detectron2_get_norm
from torch import nn

__all__ = ["GroupNorm", "get_norm", "group_norm_groups"]


def group_norm_groups(channels: int) -> int:
    """Detectron2's 32 groups where the channels divide by 32, otherwise their greatest common
    divisor (16 channels: 16 groups), so that layers narrower than 32 channels can be normalized."""
    return math.gcd(32, channels)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that accepts groups of one value (a 1 x 1 map with one channel per group).

    Such a group normalizes to 0, leaving the affine's bias, which is what the
    exported graph computes; ``nn.GroupNorm`` refuses it ("Expected more than
    1 value per channel when training", also in eval mode), so the PyTorch
    model failed on the 1 x 1 and 2 x 2 images its ONNX export detects on.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def get_norm(norm, out_channels: int):
    """As :func:`detectron2.layers.get_norm`, "GN" built as :class:`GroupNorm` of
    :func:`group_norm_groups` groups."""
    if norm == "GN":
        return GroupNorm(group_norm_groups(out_channels), out_channels)
    return detectron2_get_norm(norm, out_channels)
