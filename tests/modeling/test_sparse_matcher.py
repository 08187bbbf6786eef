"""SparseGridMatcher against Detectron2's own Matcher on the dense IoU matrix.

The reference is Detectron2's Matcher and pairwise_iou, fed the dense matrix a
block of anchors at a time (a full 2,000 x 174,720 matrix would not fit a test
machine) with one extra column holding each face's best IoU over all anchors,
so that Detectron2's low-quality rule sees the true best and promotes exactly
what it would on the whole matrix.
"""

import math

import numpy as np
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_anchor_generator
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou
from scipy.io import loadmat

from srn_d2.modeling.matcher import AnchorLevel, SparseGridMatcher
from srn_testing import srn_cfg, widerface_val_gt_dir

STRIDES = (4, 8, 16, 32, 64, 128)
STEPS = {"step1": [0.3, 0.7], "step2": [0.4, 0.5]}
LABELS = [0, -1, 1]


def grid_levels(height, width, config="Base-SRN.yaml"):
    generator = build_anchor_generator(srn_cfg(config), [ShapeSpec(stride=s) for s in STRIDES])
    maps = [torch.zeros(1, 1, math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]
    return [
        AnchorLevel(anchors.tensor, (m.shape[-2], m.shape[-1], generator.num_cell_anchors[i]), s)
        for i, (s, m, anchors) in enumerate(zip(STRIDES, maps, generator(maps)))
    ]


def detectron2_matching(steps, low_quality, faces, anchors, block=8192):
    """Detectron2's Matcher on the dense IoU matrix, a block of anchors at a time, for each
    thresholds pair of ``steps`` (one IoU matrix serves them all).

    Returns per step: matches, labels, each anchor's best IoU and each face's best IoU.
    """
    matchers = [Matcher(t, LABELS, allow_low_quality_matches=low_quality) for t in steps]
    if len(faces) == 0:
        return [(*m(anchors.new_zeros((0, len(anchors)))), None, None) for m in matchers]
    gt = Boxes(faces)
    blocks = range(0, len(anchors), block)
    best_per_face = torch.stack(
        [pairwise_iou(gt, Boxes(anchors[s : s + block])).max(dim=1).values for s in blocks]
    )
    best_per_face = best_per_face.max(dim=0).values
    matches, labels, best = [[] for _ in steps], [[] for _ in steps], []
    for start in blocks:
        iou = pairwise_iou(gt, Boxes(anchors[start : start + block]))
        best.append(iou.max(dim=0).values)
        for step, matcher in enumerate(matchers):
            block_matches, block_labels = matcher(torch.cat([iou, best_per_face[:, None]], dim=1))
            matches[step].append(block_matches[:-1])
            labels[step].append(block_labels[:-1])
    best = torch.cat(best)
    return [(torch.cat(m), torch.cat(lab), best, best_per_face) for m, lab in zip(matches, labels)]


def assert_as_detectron2(faces, levels, thresholds, low_quality=True):
    return assert_steps_as_detectron2(faces, levels, [thresholds], low_quality)[0]


def assert_steps_as_detectron2(faces, levels, steps, low_quality=True):
    """SparseGridMatcher's labels and matches equal Detectron2's for each thresholds pair of
    ``steps``; returns the labels of each."""
    anchors = torch.cat([level.boxes for level in levels])
    all_labels = []
    for thresholds, expected in zip(steps, detectron2_matching(steps, low_quality, faces, anchors)):
        matches, labels = SparseGridMatcher(thresholds, LABELS, low_quality)(Boxes(faces), levels)
        expected_matches, expected_labels, best, best_per_face = expected
        assert torch.equal(labels, expected_labels)
        all_labels.append(labels)
        if best_per_face is None:
            assert torch.equal(matches, expected_matches)
            continue
        # The promised matches: anchors whose best IoU reaches min(first threshold, lowest best
        # IoU of a face); every positive or ignored anchor is among them. The others get 0.
        promised = best >= min(thresholds[0], float(best_per_face.min()))
        assert bool((labels[~promised] == LABELS[0]).all())
        assert torch.equal(matches[promised], expected_matches[promised])
        assert bool((matches[~promised] == 0).all())
    return all_labels


def random_faces(n, extent, min_side, max_side, seed):
    generator = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=generator) * extent
    wh = min_side + torch.rand(n, 2, generator=generator) * (max_side - min_side)
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("low_quality", [True, False])
@pytest.mark.parametrize(
    "case",
    ["random", "tiny", "huge", "off_image", "degenerate", "duplicates", "none", "one"],
)
def test_equals_detectron2_on_awkward_faces(step, low_quality, case):
    faces = {
        "random": lambda: random_faces(300, 256, 3, 60, 0),
        # Smaller than the smallest anchor: best IoUs far below every threshold.
        "tiny": lambda: random_faces(60, 256, 0.3, 3, 1),
        # Larger than the largest anchor and the image.
        "huge": lambda: random_faces(20, 256, 200, 900, 2),
        # Partly or wholly outside the image, some overlapping only anchors past its border.
        "off_image": lambda: random_faces(60, 500, 10, 80, 3) - 150,
        # Zero width or height: IoU 0 with every anchor, which Detectron2's low-quality
        # rule turns into "every anchor is this face's best".
        "degenerate": lambda: torch.cat(
            [random_faces(10, 256, 5, 40, 4), torch.tensor([[50.0, 50, 50, 70]])]
        ),
        # Identical faces: ties in every anchor's best face.
        "duplicates": lambda: random_faces(50, 256, 5, 40, 5).repeat(3, 1),
        "none": lambda: torch.zeros((0, 4)),
        "one": lambda: random_faces(1, 256, 20, 40, 6),
    }[case]()
    labels = assert_as_detectron2(faces, grid_levels(256, 256), STEPS[step], low_quality)
    if case == "degenerate" and low_quality:
        assert bool((labels == 1).all())


def test_equals_detectron2_on_odd_sized_images_and_legacy_anchors():
    faces = random_faces(200, 300, 4, 90, 7)
    assert_as_detectron2(faces, grid_levels(301, 197), STEPS["step2"])
    assert_as_detectron2(faces, grid_levels(301, 197, "SRN_R_50_official.yaml"), STEPS["step1"])


def test_refined_anchors_are_matched_densely():
    """Step 2 on STR levels matches refined anchors, which lie on no grid."""
    levels = grid_levels(256, 256)
    generator = torch.Generator().manual_seed(8)
    for index in (3, 4, 5):
        boxes = levels[index].boxes
        sizes = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
        refined = boxes + torch.randn(boxes.shape, generator=generator) * 0.2 * sizes
        levels[index] = AnchorLevel(refined)
    faces = torch.cat([random_faces(150, 256, 4, 120, 9), random_faces(5, 256, 1, 2, 10)])
    assert_as_detectron2(faces, levels, STEPS["step2"])


def test_two_thousand_faces():
    faces = random_faces(2000, 512, 2, 120, 11)
    labels = assert_as_detectron2(faces, grid_levels(512, 512), STEPS["step2"])
    assert int((labels == 1).sum()) > 2000


@pytest.mark.slow
@pytest.mark.skipif(widerface_val_gt_dir() is None, reason="needs the WIDER FACE val ground truth")
def test_real_wider_face_crowds_scaled_to_1024():
    mat = loadmat(f"{widerface_val_gt_dir()}/wider_face_val.mat")
    images = [
        b[0].reshape(-1, 4).astype(np.float32)
        for per_event in mat["face_bbx_list"]
        for b in per_event[0]
    ]
    # The three most crowded images (709 faces and down) and one with a single face.
    chosen = sorted(images, key=len)[-3:] + [next(b for b in images if len(b) == 1)]
    levels = grid_levels(1024, 1024)
    for xywh in chosen:
        boxes = torch.from_numpy(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1))
        # Longer side of the faces' extent to 1024, as training resizes a crop to 1024.
        scale = 1024 / max(float(boxes[:, 2:].max()), 1.0)
        assert_steps_as_detectron2(boxes * scale, levels, list(STEPS.values()))
