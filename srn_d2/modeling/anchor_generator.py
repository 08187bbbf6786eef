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
from detectron2.modeling.anchor_generator import (
    ANCHOR_GENERATOR_REGISTRY,
    BufferList,
    DefaultAnchorGenerator,
)


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
class SRNLegacyAnchorGenerator(DefaultAnchorGenerator):
    """Anchors of the released SRN model: one aspect ratio, ``scales`` x the stride-sized window.

    Cell anchors already sit at the cell's center, so the grid offset is 0.
    """

    @configurable
    def __init__(self, *, scales: List[float], aspect_ratio: float, strides: List[int]):
        self._scales = list(scales)
        self._aspect_ratio = float(aspect_ratio)
        sizes = [[s * stride for s in scales] for stride in strides]
        super().__init__(sizes=sizes, aspect_ratios=[[aspect_ratio]], strides=strides, offset=0.0)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        ratios = cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS
        if len(ratios) != 1 or len(ratios[0]) != 1:
            raise ValueError(
                "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS must hold one ratio for "
                f"SRNLegacyAnchorGenerator, got {ratios}"
            )
        return {
            "scales": cfg.MODEL.ANCHOR_GENERATOR.LEGACY_SCALES,
            "aspect_ratio": ratios[0][0],
            "strides": [x.stride for x in input_shape],
        }

    def _calculate_anchors(self, sizes, aspect_ratios):
        del sizes, aspect_ratios  # the legacy windows depend on the stride alone
        cells = [legacy_cell_anchors(s, self._scales, self._aspect_ratio) for s in self.strides]
        return BufferList(cells)
