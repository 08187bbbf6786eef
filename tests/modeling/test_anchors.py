import math

import pytest
import torch
from detectron2.modeling import build_anchor_generator
from detectron2.layers import ShapeSpec

from srn_testing import srn_cfg

STRIDES = [4, 8, 16, 32, 64, 128]


def _anchors(cfg, height, width):
    generator = build_anchor_generator(cfg, [ShapeSpec(channels=256, stride=s) for s in STRIDES])
    features = [torch.zeros(1, 1, math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]
    return generator, generator(features)


def test_anchor_count_at_1024():
    _, anchors = _anchors(srn_cfg(), 1024, 1024)
    assert [len(a) for a in anchors] == [2 * (1024 // s) ** 2 for s in STRIDES]
    assert sum(len(a) for a in anchors) == 174_720


def test_anchor_sizes_and_aspect_ratio():
    generator, anchors = _anchors(srn_cfg(), 256, 256)
    assert generator.num_cell_anchors == [2] * 6
    for stride, level in zip(STRIDES, anchors):
        boxes = level.tensor[:2]
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        expected = torch.tensor([2 * stride, 2 * math.sqrt(2) * stride])
        torch.testing.assert_close((w * h).sqrt(), expected, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(h / w, torch.full((2,), 1.25))
        # Centered on the cell's center (offset 0.5).
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2
        torch.testing.assert_close(centers, torch.full((2, 2), stride / 2.0))
    smallest = anchors[0].area().min().sqrt().item()
    largest = anchors[-1].area().max().sqrt().item()
    assert smallest == pytest.approx(8, abs=1e-3) and largest == pytest.approx(362.04, abs=0.01)


# First-cell anchors of the released model (docs/DESIGN.md, "Anchors"), as its own generator computes them.
LEGACY = {
    4: [(-2, -3, 5, 6), (-3.66, -5.07, 6.66, 8.07)],
    8: [(-3, -5, 10, 12), (-5.9, -8.73, 12.9, 15.73)],
    16: [(-6, -10, 21, 25), (-11.8, -17.46, 26.8, 32.46)],
    32: [(-13, -20, 44, 51), (-25.01, -34.91, 56.01, 65.91)],
    64: [(-25, -39, 88, 102), (-48.61, -68.41, 111.61, 131.41)],
    128: [(-50, -78, 177, 205), (-97.22, -136.82, 224.22, 263.82)],
}


def test_legacy_anchor_generator_reproduces_released_anchors():
    cfg = srn_cfg()
    cfg.MODEL.ANCHOR_GENERATOR.NAME = "SRNLegacyAnchorGenerator"
    _, anchors = _anchors(cfg, 256, 256)
    for stride, level in zip(STRIDES, anchors):
        torch.testing.assert_close(
            level.tensor[:2], torch.tensor(LEGACY[stride]), atol=0.006, rtol=0
        )
        # The next cell along x is one stride further.
        torch.testing.assert_close(
            level.tensor[2] - level.tensor[0], torch.tensor([stride, 0.0, stride, 0.0])
        )


def test_legacy_generator_rejects_several_ratios():
    cfg = srn_cfg()
    cfg.MODEL.ANCHOR_GENERATOR.NAME = "SRNLegacyAnchorGenerator"
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[1.0, 1.25]]
    with pytest.raises(ValueError, match="ASPECT_RATIOS"):
        _anchors(cfg, 64, 64)
