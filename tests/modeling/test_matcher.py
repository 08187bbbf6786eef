"""The two steps' matchers on hand-made anchors, and how SRN turns matches into labels.

tests/modeling/test_sparse_matcher.py checks the matcher itself against Detectron2's.
"""

import pytest
import torch
from detectron2.structures import Boxes, pairwise_iou
from detectron2.utils.events import EventStorage

from srn_d2.modeling import AnchorLevel
from srn_d2.modeling.anchor_labelling import FaceBatch, label_anchors
from srn_testing import build_tiny_srn, face_instances, tiny_srn_cfg

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


def _levels():
    # Hand-placed anchors lie on no grid: the matcher takes them as they are.
    return [AnchorLevel(_anchors().tensor)]


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
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.ALLOW_LOW_QUALITY_MATCHES = False
    matcher = getattr(build_tiny_srn(cfg), f"{step}_matcher")
    _, labels = matcher(Boxes(torch.tensor([FACE, LONELY_FACE])), _levels())
    assert labels.tolist() == expected


def test_low_quality_match_promotes_each_faces_best_anchor():
    model = build_tiny_srn()
    matches, labels = model.step1_matcher(Boxes(torch.tensor([FACE, LONELY_FACE])), _levels())
    assert labels.tolist() == [1, 1, -1, -1, -1, 0, 0, 1]
    assert matches[-1].item() == 1


def test_model_labels_use_background_class_and_ignore():
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.ALLOW_LOW_QUALITY_MATCHES = False
    model = build_tiny_srn(cfg)
    gt = face_instances((64, 64), [FACE])
    step = label_anchors(
        {"p2": _anchors().tensor[None]}, FaceBatch.from_instances([gt]), model.step2_matcher, {}, 1
    )
    # class 0 = face, num_classes (1) = background, -1 = ignored
    assert step.labels["p2"][0].tolist() == [0, 0, 0, -1, 1, 1, 1, 1]
    torch.testing.assert_close(step.gt_boxes["p2"][0, :3], torch.tensor([FACE] * 3))


def test_image_without_faces_is_all_background():
    model = build_tiny_srn()
    step = label_anchors(
        {"p2": _anchors().tensor[None]},
        FaceBatch.from_instances([face_instances((64, 64), [])]),
        model.step1_matcher,
        {},
        1,
    )
    assert step.labels["p2"][0].tolist() == [1] * len(_anchors())


def test_faces_outside_the_image_are_counted_and_left_out():
    """A face with no pixel in the image overlaps no anchor; Detectron2's low-quality
    rule would then make every anchor its best match."""
    inside, outside, degenerate, partly = (
        [10.0, 10, 30, 30],
        [200.0, 200, 220, 220],
        [5.0, 5, 5, 25],
        [50, 50, 90, 70],
    )
    faces = FaceBatch.from_instances(
        [
            face_instances((64, 64), [inside, outside, degenerate, partly]),
            face_instances((64, 64), []),
        ]
    )
    assert int(faces.num_outside_image) == 2
    assert faces.valid.tolist() == [[True, False, False, True], [False] * 4]
    # Matched as annotated: a face partly outside keeps its whole box.
    assert faces.boxes[0].tolist() == [inside, [0.0] * 4, [0.0] * 4, partly]


def test_the_training_step_counts_the_faces_outside_the_image():
    model = build_tiny_srn()
    inside, outside = [10.0, 10, 30, 30], [200.0, 200, 220, 220]
    batch = [
        {
            "image": torch.zeros(3, 64, 64),
            "instances": face_instances((64, 64), [inside, outside, outside]),
        }
    ]
    with EventStorage() as storage:
        model(batch)
        assert storage.latest()["num_faces_outside_image"][0] == 2
