"""RFE blocks with narrow branches, rewritten for onnxruntime: the same function in four
convolutions over all four branches' channels at once, instead of twelve and a concatenation.

onnxruntime runs CPU convolutions in a blocked NCHWc layout (8 channels a block with AVX2, 16
with AVX-512), and a convolution takes its input in that layout only when its input channels
fill whole blocks. The smallest SRN's RFE has four branches of 4 channels
(``MODEL.SRN.RFE_BRANCH_CHANNELS``): the eight convolutions that take a branch's 4 channels each
need a conversion back to plain NCHW before them, and the concatenation four more. Those 12 a
block were 216 of the 253 conversions in the exported smallest SRN (18 block passes), among many
small kernels that a second thread has to wait for. Merged, the branches' convolutions become
four of 16 channels, which stay in the blocked layout: more multiply-adds (block-diagonal
weights, the 1xk and kx1 kernels widened to the widest), fewer and larger kernels. The export
traces the merged form; the model trains and checkpoints the paper's.
"""

import copy
from typing import List

import torch
from torch import nn
from torch.nn import functional as F

from ..modeling.rfe import RFE

__all__ = ["MERGE_BELOW_CHANNELS", "MergedRFE", "merge_narrow_rfe"]

# Branches narrower than this are merged. benchmarks/benchmark_merged_rfe.py, 640x480, an AVX-512
# CPU: the smallest SRN's 4-channel branches 30.2 -> 28.4 ms on one thread and 22.0 -> 17.9 ms on
# two; MobileNetV3-Large's SRN's 8-channel ones, merged, 85.4 -> 92.7 ms on one (the merged form's
# extra multiply-adds outweigh it) and 51.5 -> 51.1 on two, so they stay; R-50's 64 are aligned.
MERGE_BELOW_CHANNELS = 8


def _same_padding(conv: nn.Conv2d) -> bool:
    return all(k % 2 == 1 and p == k // 2 for k, p in zip(conv.kernel_size, conv.padding))


class MergedRFE(nn.Module):
    """An :class:`RFE` as ``x + fuse(relu(mix(relu(wide(y) + tall(y)))))``, where
    ``y = relu(reduce(x))``: ``reduce`` is the four branches' first 1x1 convolutions side by side,
    ``wide`` and ``tall`` their 1xk and kx1 convolutions (each branch's kernel centred in the widest,
    zero elsewhere and across branches), ``mix`` their last 1x1 convolutions, block-diagonal.

    Shapes: (N, C, H, W) -> (N, C, H, W), as the RFE it is made from.
    """

    def __init__(self, rfe: RFE):
        super().__init__()
        middles = [branch[2] for branch in rfe.branches]
        if not all(
            _same_padding(conv) and 1 in conv.kernel_size and conv.groups == 1 for conv in middles
        ):
            raise ValueError(
                "MergedRFE takes RFE branches whose middle convolutions are 1xk or kx1 with "
                f"'same' padding; got kernels {[c.kernel_size for c in middles]}, paddings "
                f"{[c.padding for c in middles]}"
            )
        firsts = [branch[0] for branch in rfe.branches]
        lasts = [branch[4] for branch in rfe.branches]
        width = sum(conv.out_channels for conv in firsts)
        self.reduce = nn.Conv2d(firsts[0].in_channels, width, 1)
        with torch.no_grad():
            self.reduce.weight.copy_(torch.cat([conv.weight for conv in firsts]))
            self.reduce.bias.copy_(torch.cat([conv.bias for conv in firsts]))
        wide = [c for c in middles if c.kernel_size[0] == 1]
        tall = [c for c in middles if c.kernel_size[0] != 1]
        self.wide = self._block_diagonal(middles, wide, (1, max(c.kernel_size[1] for c in wide)))
        self.tall = self._block_diagonal(middles, tall, (max(c.kernel_size[0] for c in tall), 1))
        self.mix = self._block_diagonal(lasts, lasts, (1, 1))
        self.fuse = copy.deepcopy(rfe.fuse)

    @staticmethod
    def _block_diagonal(convs: List[nn.Conv2d], chosen: List[nn.Conv2d], kernel) -> nn.Conv2d:
        """One convolution over all ``convs``' channels, with ``chosen``'s weights (centred in
        ``kernel``) and biases on their own channels' block and zeros elsewhere."""
        width = sum(conv.out_channels for conv in convs)
        merged = nn.Conv2d(width, width, kernel, padding=(kernel[0] // 2, kernel[1] // 2))
        with torch.no_grad():
            merged.weight.zero_()
            merged.bias.zero_()
            start = 0
            for conv in convs:
                block = slice(start, start + conv.out_channels)
                start += conv.out_channels
                if not any(conv is c for c in chosen):
                    continue
                top = (kernel[0] - conv.kernel_size[0]) // 2
                left = (kernel[1] - conv.kernel_size[1]) // 2
                merged.weight[
                    block,
                    block,
                    top : top + conv.kernel_size[0],
                    left : left + conv.kernel_size[1],
                ] = conv.weight
                merged.bias[block] = conv.bias
        return merged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.reduce(x))
        y = F.relu(self.wide(y) + self.tall(y))
        y = F.relu(self.mix(y))
        return x + self.fuse(y)


def merge_narrow_rfe(model: nn.Module) -> nn.Module:
    """``model`` with every :class:`RFE` whose branches are narrower than
    :data:`MERGE_BELOW_CHANNELS` replaced by its :class:`MergedRFE`, for an ONNX export: a copy
    if there is one, ``model`` itself otherwise."""

    def narrow(module: nn.Module) -> bool:
        return isinstance(module, RFE) and module.branches[0][0].out_channels < MERGE_BELOW_CHANNELS

    if not any(narrow(module) for module in model.modules()):
        return model
    merged = copy.deepcopy(model)
    for parent in list(merged.modules()):
        for name, child in list(parent.named_children()):
            if narrow(child):
                setattr(parent, name, MergedRFE(child))
    return merged
