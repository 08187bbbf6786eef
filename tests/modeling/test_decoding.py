"""One level's decoding (srn_d2.modeling.decoding) against Detectron2's own
``DenseDetector._decode_per_level_predictions``, called on the same inputs."""

from types import SimpleNamespace

import pytest
import torch
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import Boxes

from srn_d2.modeling.decoding import capped, decode_level
from srn_d2.modeling.landmarks import LandmarkCoder

TRANSFORM = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
CODER = LandmarkCoder((1.0, 1.0))


def _level(num_anchors, num_classes, seed):
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(num_anchors, 2, generator=generator) * 600
    sizes = 4 + torch.rand(num_anchors, 2, generator=generator) * 100
    anchors = torch.cat([corners, corners + sizes], dim=1)
    scores = torch.rand(num_anchors, num_classes, generator=generator)
    deltas = torch.randn(num_anchors, 4, generator=generator) * 0.3
    landmarks = torch.randn(num_anchors, 10, generator=generator)
    return anchors, scores, deltas, landmarks


@pytest.mark.parametrize(
    "num_anchors, num_classes, score_thresh, topk",
    [
        (37 * 3, 1, 0.05, 1000),  # odd level, fewer candidates than top-k
        (5003, 1, 0.05, 1000),  # thousands of candidates, top-k binds
        (2001, 3, 0.5, 700),  # several classes
        (29, 1, 1.0, 1000),  # nothing above the threshold: an empty level
    ],
)
def test_decode_level_equals_detectron2(num_anchors, num_classes, score_thresh, topk):
    anchors, scores, deltas, _ = _level(num_anchors, num_classes, seed=num_anchors)
    reference = DenseDetector._decode_per_level_predictions(
        SimpleNamespace(box2box_transform=TRANSFORM),
        Boxes(anchors),
        scores,
        deltas,
        score_thresh,
        topk,
        (480, 640),
    )
    ours = decode_level(TRANSFORM, None, anchors, scores, deltas, score_thresh, topk, (480, 640))
    expected_count = min(int((scores > score_thresh).sum()), topk)
    assert len(ours) == len(reference) == expected_count
    assert torch.equal(ours.scores, reference.scores)
    assert torch.equal(ours.pred_classes, reference.pred_classes)
    assert torch.equal(ours.pred_boxes.tensor, reference.pred_boxes.tensor)
    assert not ours.has("pred_keypoints")


def test_landmarks_come_from_the_anchors_of_the_boxes():
    anchors, scores, _, landmarks = _level(4001, 1, seed=7)
    # Zero box deltas decode every box to its own anchor (to rounding), which names the anchor each
    # candidate was taken from.
    decoded = decode_level(
        TRANSFORM,
        CODER,
        anchors,
        scores,
        torch.zeros_like(anchors),
        0.3,
        500,
        (480, 640),
        landmarks,
    )
    assert len(decoded) == 500
    distance = (decoded.pred_boxes.tensor[:, None] - anchors[None]).abs().sum(dim=2)
    index = distance.argmin(dim=1)
    assert distance.min(dim=1).values.max() < 1e-3  # each box is its anchor, to rounding
    points = decoded.pred_keypoints
    assert points.shape == (500, 5, 3)
    assert torch.equal(points[..., :2], CODER.apply_deltas(landmarks[index], anchors[index]))
    assert torch.equal(points[..., 2], decoded.scores[:, None].expand(-1, 5))


def test_capped_keeps_the_cap_in_a_traced_graph():
    assert capped(7, 5) == 5 and capped(3, 5) == 3
    traced = torch.jit.trace(lambda x: torch.zeros(capped(x.shape[0], 5)), torch.ones(9))
    assert traced(torch.ones(3)).shape == (3,)
    assert traced(torch.ones(11)).shape == (5,)
