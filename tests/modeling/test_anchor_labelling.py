"""Labelling a whole batch at once gives each image the labels of Detectron2's Matcher on that
image alone: every label, and the face of every positive, on batches mixing awkward images."""

import math

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_anchor_generator
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou

from srn_d2.modeling import LevelPlan
from srn_d2.modeling.anchor_labelling import FaceBatch, label_anchors
from srn_d2.modeling.matcher import SparseGridMatcher
from srn_testing import face_instances, srn_cfg

NUM_CLASSES = 1
LABELS = [0, -1, 1]
SIZE = (150, 203)  # odd sides: the last grid cells hang over the image


def _anchors(plan, size):
    cfg = srn_cfg("Base-SRN.yaml")
    generator = build_anchor_generator(
        cfg, [ShapeSpec(stride=plan.stride(level)) for level in plan.levels]
    )
    maps = [
        torch.zeros(
            1, 1, math.ceil(size[0] / plan.stride(level)), math.ceil(size[1] / plan.stride(level))
        )
        for level in plan.levels
    ]
    anchors = dict(zip(plan.levels, (a.tensor for a in generator(maps))))
    layouts = {
        level: ((*m.shape[-2:], a), plan.stride(level))
        for level, m, a in zip(plan.levels, maps, generator.num_cell_anchors)
    }
    return anchors, layouts


def _refined(anchors, plan, num_images, seed):
    """STR's step-2 anchors: each image's STR-level anchors moved by its own random deltas."""
    generator = torch.Generator().manual_seed(seed)
    refined = {}
    for level, boxes in anchors.items():
        if level in plan.str_levels:
            jitter = torch.randn((num_images, *boxes.shape), generator=generator) * 0.15
            refined[level] = boxes + jitter * (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
        else:
            refined[level] = boxes
    return refined


def _reference(anchors, faces, thresholds, num_images):
    """Each image alone through Detectron2's Matcher on the dense IoU matrix."""
    matcher = Matcher(thresholds, LABELS, allow_low_quality_matches=True)
    labels, boxes = [], []
    for i, gt in enumerate(faces):
        image_anchors = torch.cat([a.expand(num_images, -1, -1)[i] for a in anchors.values()])
        clipped = gt.gt_boxes.clone()
        clipped.clip(gt.image_size)
        gt = gt[clipped.nonempty()]
        if len(gt) == 0:
            labels.append(torch.full((len(image_anchors),), NUM_CLASSES))
            boxes.append(None)
            continue
        matches, match_labels = matcher(pairwise_iou(gt.gt_boxes, Boxes(image_anchors)))
        image_labels = gt.gt_classes[matches].clone()
        image_labels[match_labels == 0] = NUM_CLASSES
        image_labels[match_labels == -1] = -1
        labels.append(image_labels)
        boxes.append(gt.gt_boxes.tensor[matches])
    return labels, boxes


def _faces(seed, count, size=SIZE):
    generator = torch.Generator().manual_seed(seed)
    side = 2 + torch.rand(count, generator=generator) ** 2 * 80
    x1 = torch.rand(count, generator=generator) * (size[1] + 20) - 10
    y1 = torch.rand(count, generator=generator) * (size[0] + 20) - 10
    return torch.stack([x1, y1, x1 + side, y1 + side * 1.2], dim=1).tolist()


BATCHES = {
    "one face, none, crowded": [[[20.0, 30.0, 60.0, 80.0]], [], _faces(1, 300)],
    "border faces and faces outside": [
        [
            [0.0, 0.0, 16.0, 20.0],
            [187.0, 130.0, 203.0, 150.0],
            [-30.0, -30.0, -5.0, -5.0],
            [300.0, 10.0, 320.0, 30.0],
            [195.0, 0.0, 230.0, 40.0],
        ],
        _faces(2, 7),
    ],
    "ties: the same face twice, faces sharing anchors": [
        [[40.0, 40.0, 72.0, 80.0], [40.0, 40.0, 72.0, 80.0], [44.0, 40.0, 76.0, 80.0]],
        [[10.0, 10.0, 26.0, 30.0]] * 3,
    ],
    "2,000 faces beside 3": [_faces(3, 2000), _faces(4, 3)],
}


@pytest.mark.parametrize("step", ["step1", "step2"])
@pytest.mark.parametrize("batch", BATCHES, ids=list(BATCHES))
def test_a_batch_is_labelled_as_each_image_alone(batch, step):
    plan = LevelPlan()
    grid, layouts = _anchors(plan, SIZE)
    num_images = len(BATCHES[batch])
    anchors = grid if step == "step1" else _refined(grid, plan, num_images, seed=len(batch))
    thresholds = [0.3, 0.7] if step == "step1" else [0.4, 0.5]
    faces = [face_instances(SIZE, boxes) for boxes in BATCHES[batch]]
    # A small pair budget: crowded images are matched over several chunks.
    matcher = SparseGridMatcher(thresholds, LABELS, allow_low_quality_matches=True, max_pairs=5000)
    got = label_anchors(anchors, FaceBatch.from_instances(faces), matcher, layouts, NUM_CLASSES)
    labels = torch.cat([got.labels[level] for level in plan.levels], dim=1)
    boxes = torch.cat([got.gt_boxes[level] for level in plan.levels], dim=1)
    expected_labels, expected_boxes = _reference(anchors, faces, thresholds, num_images)
    for i in range(num_images):
        assert torch.equal(labels[i], expected_labels[i]), f"image {i}"
        positive = expected_labels[i] == 0
        if expected_boxes[i] is not None:
            assert torch.equal(boxes[i][positive], expected_boxes[i][positive]), f"image {i}"
    assert int((labels == 0).sum()) > 0


def test_a_batch_without_any_face_is_background():
    plan = LevelPlan()
    anchors, layouts = _anchors(plan, (64, 96))
    faces = FaceBatch.from_instances([face_instances((64, 96), []), face_instances((64, 96), [])])
    matcher = SparseGridMatcher([0.3, 0.7], LABELS, allow_low_quality_matches=True)
    got = label_anchors(anchors, faces, matcher, layouts, NUM_CLASSES)
    assert all(
        bool((labels == NUM_CLASSES).all()) and labels.shape[0] == 2
        for labels in got.labels.values()
    )
