"""The anchor tiling of the authors' released SRN model.

SRN's own configs use Detectron2's ``DefaultAnchorGenerator`` (sizes 2S and
2*sqrt(2)*S, aspect ratio 1.25 = height / width). The released weights were
trained with anchors built the legacy (py-faster-rcnn) way, whose rounding
and "-1" windows shift every anchor by a pixel or two; reproducing the
released detections needs exactly those boxes.
"""

import math
from typing import List

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import ANCHOR_GENERATOR_REGISTRY, BufferList
from detectron2.structures import Boxes
from torch import nn

from ..errors import require


def legacy_cell_anchors(stride: int, scales: List[float], aspect_ratio: float) -> torch.Tensor:
    """Anchors (x1, y1, x2, y2) of the first grid cell, centered on ((S-1)/2, (S-1)/2)."""
    center = (stride - 1) / 2.0
    base_w = round(math.sqrt(stride * stride / aspect_ratio))
    base_h = round(base_w * aspect_ratio)
    boxes = []
    for scale in scales:
        half_w = (base_w * scale - 1) / 2.0
        half_h = (base_h * scale - 1) / 2.0
        boxes.append([center - half_w, center - half_h, center + half_w, center + half_h])
    return torch.tensor(boxes, dtype=torch.float32)


@ANCHOR_GENERATOR_REGISTRY.register()
class SRNLegacyAnchorGenerator(nn.Module):
    """Anchors of the released SRN model: one aspect ratio, ``scales`` x the stride-sized window.

    It has the interface of Detectron2's anchor generators (``num_cell_anchors``,
    ``box_dim``, ``forward(features) -> List[Boxes]``); its cell anchors already
    sit at the first cell's center, so the grid starts at 0 (no offset).
    """

    box_dim: int = 4

    @configurable
    def __init__(self, *, scales: List[float], aspect_ratio: float, strides: List[int]):
        super().__init__()
        self.strides = list(strides)
        self.cell_anchors = BufferList(
            [legacy_cell_anchors(s, scales, aspect_ratio) for s in self.strides]
        )
        self.num_cell_anchors = [len(scales)] * len(self.strides)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        ratios = cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS
        require(
            len(ratios) == 1 and len(ratios[0]) == 1,
            "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
            ratios,
            "must hold one ratio for SRNLegacyAnchorGenerator",
        )
        return {
            "scales": cfg.MODEL.LEGACY_ANCHOR_GENERATOR.STRIDE_MULTIPLES,
            "aspect_ratio": ratios[0][0],
            "strides": [x.stride for x in input_shape],
        }

    def forward(self, features: List[torch.Tensor]) -> List[Boxes]:
        """
        Args:
            features: per level, a (N, C, H, W) map (only its size is read).

        Returns:
            per level, Boxes of H * W * A anchors, position-major (row by row), A per position.
        """
        anchors = []
        for stride, cell, feature in zip(self.strides, self.cell_anchors, features):
            height, width = feature.shape[-2:]
            shifts_x = torch.arange(
                0, width * stride, step=stride, dtype=torch.float32, device=cell.device
            )
            shifts_y = torch.arange(
                0, height * stride, step=stride, dtype=torch.float32, device=cell.device
            )
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            anchors.append(Boxes((shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4)))
        return anchors
