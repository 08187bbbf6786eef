"""The authors' released SRN network (github.com/ChiCheng123/SRN, ``srn/model/resnet_srn.py``),
restated in plain PyTorch under the parameter names of their checkpoint.

It shares no code with ``srn_d2.modeling``: the parity tests run it beside the
converted model, the converter's tests build released-layout checkpoints from
it, and the export benchmark times the authors' network against srn_d2's.
"""

from typing import List, Tuple

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


def _conv(cin, cout, kernel, stride=1, padding=0):
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding)


# The released RFE's branches, in order: (kernel, padding) of their middle conv.
_RFE_KERNELS = (((1, 5), (0, 2)), ((5, 1), (2, 0)), ((1, 3), (0, 1)), ((3, 1), (1, 0)))


class ReleasedRFE(nn.Module):
    """``branch0``..``branch3`` of 1x1, 1xk or kx1, 1x1 convs with ReLUs; ``cated_conv``; a shortcut."""

    def __init__(self, channels=256):
        super().__init__()
        inner = channels // 4
        for index, (kernel, padding) in enumerate(_RFE_KERNELS):
            branch = nn.Sequential(
                _conv(channels, inner, 1),
                nn.ReLU(),
                _conv(inner, inner, kernel, padding=padding),
                nn.ReLU(),
                _conv(inner, inner, 1),
                nn.ReLU(),
            )
            self.add_module(f"branch{index}", branch)
        self.cated_conv = nn.Sequential(_conv(channels, channels, 1), nn.ReLU())

    def forward(self, x):
        branches = [getattr(self, f"branch{i}")(x) for i in range(4)]
        return self.cated_conv(torch.cat(branches, 1)) + x


def _tower():
    conv3x3 = lambda: _conv(256, 256, 3, padding=1)  # noqa: E731
    return nn.Sequential(conv3x3(), nn.ReLU(), ReleasedRFE(256), conv3x3(), nn.ReLU())


class ReleasedSRN(nn.Module):
    """The released ResNet-50 SRN, parameters named as in the authors' checkpoint."""

    def __init__(self):
        super().__init__()
        trunk = torchvision.models.resnet50(weights=None)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            self.add_module(name, getattr(trunk, name))
        self.layer5 = _conv(2048, 1024, 3, stride=2, padding=1)
        self.layer6 = _conv(1024, 256, 3, stride=2, padding=1)
        for level, channels in zip(range(2, 8), (256, 512, 1024, 2048, 1024, 256)):
            self.add_module(f"c{level}_conv", _conv(channels, 256, 1))
        for level, channels in zip(range(2, 6), (256, 512, 1024, 2048)):
            self.add_module(f"c{level}_lateral", _conv(channels, 256, 1))
        for level in range(2, 8):
            stride = 2 if level >= 6 else 1
            self.add_module(f"p{level}_conv", _conv(256, 256, 3, stride=stride, padding=1))
        self.cls_subnet = _tower()
        self.box_subnet = _tower()
        self.cls_subnet_pred = _conv(256, 2, 1)
        self.box_subnet_pred = _conv(256, 8, 1)

    @staticmethod
    def _upsample_add(top, lateral):
        # torch 0.3's bilinear upsampling, which the release pinned, aligned corners.
        return (
            F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True)
            + lateral
        )

    def forward(self, x) -> Tuple[List, List]:
        """
        Args:
            x: (N, 3, H, W) RGB in [0, 1], ImageNet-normalized, any H and W.
        Returns:
            per level (finest first), ([(cls logits, deltas) of step 1], [(cls logits, deltas) of step 2]).
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        c6 = self.layer5(c5)
        c7 = self.layer6(c6)
        first = [
            getattr(self, f"c{i}_conv")(c) for i, c in zip(range(2, 8), (c2, c3, c4, c5, c6, c7))
        ]
        lateral5 = self.c5_lateral(c5)
        p5 = self.p5_conv(lateral5)
        p6 = self.p6_conv(lateral5)
        p7 = self.p7_conv(p6)
        sum4 = self._upsample_add(lateral5, self.c4_lateral(c4))
        sum3 = self._upsample_add(sum4, self.c3_lateral(c3))
        sum2 = self._upsample_add(sum3, self.c2_lateral(c2))
        second = [self.p2_conv(sum2), self.p3_conv(sum3), self.p4_conv(sum4), p5, p6, p7]
        return [self._head(f) for f in first], [self._head(f) for f in second]

    def _head(self, feature):
        return self.cls_subnet_pred(self.cls_subnet(feature)), self.box_subnet_pred(
            self.box_subnet(feature)
        )
