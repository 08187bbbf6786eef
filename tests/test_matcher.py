import pytest
import torch
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou

from srn_d2.modeling import ChunkedMatcher
from srn_testing import build_tiny_srn, face_instances

FACE = [0.0, 0.0, 10.0, 10.0]
# Anchors sharing the face's top-left corner, growing taller: IoU = 10 / height.
HEIGHTS = [10.0, 12.5, 100 / 6, 100 / 4.5, 100 / 3.5, 50.0]
IOUS = [1.0, 0.8, 0.6, 0.45, 0.35, 0.2]
FAR = [200.0, 200.0, 210.0, 210.0]
# A second face whose best anchor only reaches IoU 0.35: positive through the low-quality rule alone.
LONELY_FACE = [100.0, 100.0, 110.0, 110.0]
LONELY_BEST = [100.0, 100.0, 110.0, 100 + 100 / 3.5]


def _anchors():
    return Boxes(torch.tensor([[0, 0, 10, h] for h in HEIGHTS] + [FAR, LONELY_BEST]))


def test_hand_made_ious():
    iou = pairwise_iou(Boxes(torch.tensor([FACE])), _anchors())[0, : len(IOUS)]
    torch.testing.assert_close(iou, torch.tensor(IOUS))


@pytest.mark.parametrize(
    "step, expected",
    [
        # step 1: >= 0.7 positive, < 0.3 negative, else ignored
        ("step1", [1, 1, -1, -1, -1, 0, 0, -1]),
        # step 2: >= 0.5 positive, < 0.4 negative, else ignored
        ("step2", [1, 1, 1, -1, 0, 0, 0, 0]),
    ],
)
def test_step_thresholds_without_low_quality(step, expected):
    model = build_tiny_srn()
    matcher = getattr(model, f"{step}_matcher")
    matcher.allow_low_quality_matches = False
    _, labels = matcher(Boxes(torch.tensor([FACE, LONELY_FACE])), _anchors())
    assert labels.tolist() == expected


def test_low_quality_match_promotes_each_faces_best_anchor():
    model = build_tiny_srn()
    matches, labels = model.step1_matcher(Boxes(torch.tensor([FACE, LONELY_FACE])), _anchors())
    assert labels.tolist() == [1, 1, -1, -1, -1, 0, 0, 1]
    assert matches[-1].item() == 1


def test_model_labels_use_background_class_and_ignore():
    model = build_tiny_srn()
    model.step2_matcher.allow_low_quality_matches = False
    gt = face_instances((64, 64), [FACE])
    labels, boxes = model.label_anchors({"p2": _anchors().tensor}, [gt], model.step2_matcher)
    # class 0 = face, num_classes (1) = background, -1 = ignored
    assert labels["p2"][0].tolist() == [0, 0, 0, -1, 1, 1, 1, 1]
    torch.testing.assert_close(boxes["p2"][0, :3], torch.tensor([FACE] * 3))


def test_image_without_faces_is_all_background():
    model = build_tiny_srn()
    labels, _ = model.label_anchors({"p2": _anchors().tensor}, [face_instances((64, 64), [])], model.step1_matcher)
    assert labels["p2"][0].tolist() == [1] * len(_anchors())


def _random_boxes(n, size, min_side, max_side, generator):
    xy = torch.rand(n, 2, generator=generator) * size
    wh = min_side + torch.rand(n, 2, generator=generator) * (max_side - min_side)
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("low_quality", [True, False])
def test_chunked_matching_equals_dense(low_quality):
    generator = torch.Generator().manual_seed(0)
    # Dense anchors on a grid, faces among them: every face overlaps some anchor.
    ys, xs = torch.meshgrid(torch.arange(0, 256, 4.0), torch.arange(0, 256, 4.0), indexing="ij")
    centers = torch.stack([xs.flatten(), ys.flatten()], dim=1)
    anchors = Boxes(torch.cat([torch.cat([centers - s, centers + s * 1.25], dim=1) for s in (4, 6)]))
    gt = Boxes(_random_boxes(300, 240, 3, 60, generator))
    # Duplicated faces make ties for the low-quality rule.
    gt = Boxes.cat([gt, gt[:5]])

    dense = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=low_quality)
    expected_matches, expected_labels = dense(pairwise_iou(gt, anchors))
    chunked = ChunkedMatcher([0.4, 0.5], [0, -1, 1], low_quality, max_elements=300 * 97)
    assert len(chunked._chunks(len(gt), len(anchors))) > 10
    matches, labels = chunked(gt, anchors)
    assert torch.equal(labels, expected_labels)
    assert torch.equal(matches, expected_matches)


def test_chunked_matcher_without_faces():
    matches, labels = ChunkedMatcher([0.4, 0.5], [0, -1, 1], True)(Boxes(torch.zeros(0, 4)), _anchors())
    assert labels.tolist() == [0] * len(_anchors()) and matches.tolist() == [0] * len(_anchors())


def test_face_overlapping_no_anchor_promotes_nothing():
    # The dense Matcher would make every anchor (all at IoU 0) positive here.
    matcher = ChunkedMatcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    _, labels = matcher(Boxes(torch.tensor([[500.0, 500.0, 510.0, 510.0]])), _anchors())
    assert labels.tolist() == [0] * len(_anchors())
