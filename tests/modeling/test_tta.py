import cv2
import pytest
import torch
from detectron2.modeling import build_model

from srn_d2.modeling import SRNWithTTA, bbox_vote, srn_tta_passes
from srn_d2.modeling.test_time_augmentation import (
    KEEP_ALL,
    KEEP_LARGER,
    KEEP_SMALLER,
    TTAPass,
    box_size_mask,
)

from srn_testing import build_tiny_srn, random_image, srn_cfg, tiny_srn_cfg


def test_vote_drops_singletons_and_averages_groups_by_score():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 9.0, 9.0],
            [2.0, 0.0, 11.0, 9.0],  # IoU with the first (+1 areas): 80 / 120
            [50.0, 50.0, 60.0, 60.0],  # alone: dropped
        ]
    )
    scores = torch.tensor([0.25, 0.75, 0.9])
    merged, merged_scores = bbox_vote(boxes, scores, iou_thresh=0.5, max_dets=10)
    assert merged_scores.tolist() == [0.75]
    # (0.25 * [0, 0, 9, 9] + 0.75 * [2, 0, 11, 9]) / 1.0
    assert merged.tolist() == [[1.5, 0.0, 10.5, 9.0]]


def test_vote_iou_uses_plus_one_areas_at_the_threshold():
    # With +1 areas: inter 5 * 10 = 50, union 100 + 100 - 50 = 150 -> IoU 1/3 exactly.
    # Without: inter 4 * 9 = 36, union 81 + 81 - 36 = 126 -> 0.2857.
    a = [0.0, 0.0, 9.0, 9.0]
    b = [5.0, 0.0, 14.0, 9.0]
    boxes = torch.tensor([a, b], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    merged, merged_scores = bbox_vote(boxes, scores, iou_thresh=1.0 / 3.0, max_dets=10)
    assert merged_scores.tolist() == [0.9]
    merged, _ = bbox_vote(boxes, scores, iou_thresh=1.0 / 3.0 + 1e-9, max_dets=10)
    assert len(merged) == 0


def test_vote_groups_greedily_in_score_order_and_caps_output():
    # Three well-separated pairs: each yields its max score, best first, until max_dets.
    base = torch.tensor([0.0, 0.0, 19.0, 19.0])
    boxes = torch.stack([base + 100 * k for k in (0, 0, 1, 1, 2, 2)])
    boxes[1] += 1.0
    boxes[3] += 1.0
    boxes[5] += 1.0
    scores = torch.tensor([0.5, 0.4, 0.9, 0.1, 0.7, 0.6])
    merged, merged_scores = bbox_vote(boxes, scores, iou_thresh=0.5, max_dets=2)
    assert merged_scores.tolist() == pytest.approx([0.9, 0.7])
    expected_first = (boxes[2] * 0.9 + boxes[3] * 0.1) / 1.0
    assert torch.allclose(merged[0], expected_first)


def test_vote_of_nothing():
    merged, scores = bbox_vote(torch.zeros((0, 4)), torch.zeros((0,)), 0.5, 750)
    assert merged.shape == (0, 4) and scores.shape == (0,)


def test_schedule_small_image():
    # 100 x 100 px, budget 400^2 = 16x the pixels: 1.5^2t <= 16 for t = 1, 2, 3.
    passes = srn_tta_passes(100, 100, 400)
    assert passes == [
        TTAPass(),
        TTAPass(flip=True),
        TTAPass((0.5,), keep=KEEP_LARGER),
        TTAPass((1.5,), keep=KEEP_SMALLER),
        TTAPass((2.25,), keep=KEEP_SMALLER),
        TTAPass((3.375,), keep=KEEP_SMALLER),
        TTAPass((4.0,), keep=KEEP_SMALLER),
    ]


def test_schedule_non_square_and_exact_budget():
    # 300 x 200 -> budget 1000^2 / 60000 = 16.67 -> same three enlargements;
    # the last pass is sqrt(16.67).
    scales = [p.scale for p in srn_tta_passes(300, 200, 1000, flip=False)]
    assert scales[:-1] == [1.0, 0.5, 1.5, 2.25, 3.375]
    assert scales[-1] == pytest.approx((1000**2 / 60000) ** 0.5)
    # An enlargement that lands exactly on the budget is kept (the released floor(log)).
    assert [p.scale for p in srn_tta_passes(100, 100, 150, flip=False)] == [1.0, 0.5, 1.5, 1.5]
    # ... as far as the release's floating point lets it: 32 x 32 px under a 243 px budget
    # is exactly 1.5 ** 10 times smaller, but log(59049 / 1024, 2.25) computes to 4.999999999999999.
    scales = [p.scale for p in srn_tta_passes(32, 32, 243, flip=False)]
    assert scales[2:-1] == [1.5**t for t in range(1, 5)] and scales[-1] == pytest.approx(1.5**5)


def test_schedule_over_budget_image_resizes_the_resized_image():
    passes = srn_tta_passes(1000, 1000, 500)
    assert passes == [
        TTAPass((0.5,)),
        TTAPass((0.5,), flip=True),
        TTAPass((0.5, 0.75), keep=KEEP_LARGER),
        TTAPass((0.5, 0.5), keep=KEEP_LARGER),
    ]
    assert [p.scale for p in passes] == [0.5, 0.5, 0.375, 0.25]


def test_schedule_rejects_bad_scales():
    with pytest.raises(ValueError, match="ENLARGE_BASE"):
        srn_tta_passes(10, 10, 100, enlarge_base=1.0)
    with pytest.raises(ValueError, match="SHRINK"):
        srn_tta_passes(10, 10, 100, shrink=1.5)


def test_size_filters():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 40.0, 10.0],  # 40 x 10
            [0.0, 0.0, 30.0, 30.0],  # 30 x 30
            [0.0, 0.0, 99.0, 200.0],  # 99 x 200
            [0.0, 0.0, 100.0, 100.0],  # 100 x 100
        ]
    )
    assert box_size_mask(boxes, KEEP_ALL, 30, 100).tolist() == [True] * 4
    # Longer side > 30: 40 yes, 30 no (strict), 200, 100 yes.
    assert box_size_mask(boxes, KEEP_LARGER, 30, 100).tolist() == [True, False, True, True]
    # Shorter side < 100: 10, 30, 99 yes; 100 no.
    assert box_size_mask(boxes, KEEP_SMALLER, 30, 100).tolist() == [True, True, True, False]
    # Inclusive pixel boxes span one pixel more: 30 x 30 becomes 31 > 30, 99 becomes 100.
    assert box_size_mask(boxes, KEEP_LARGER, 30, 100, offset=1.0).tolist() == [
        True,
        True,
        True,
        True,
    ]
    assert box_size_mask(boxes, KEEP_SMALLER, 30, 100, offset=1.0).tolist() == [
        True,
        True,
        False,
        False,
    ]


def _tta(legacy=False, max_size=96):
    cfg = tiny_srn_cfg()
    cfg.TEST.AUG.SRN.INCLUSIVE_PIXEL_BOXES = legacy
    cfg.MODEL.SRN.SCORE_THRESH_TEST = 0.0
    cfg.TEST.AUG.SRN.MAX_SIZE = max_size
    cfg.TEST.AUG.SRN.SHRINK_MIN_BOX = 0.0
    cfg.TEST.AUG.SRN.ENLARGE_MAX_BOX = 1e6
    cfg.TEST.DETECTIONS_PER_IMAGE = 200
    model = build_tiny_srn(cfg).eval()
    return SRNWithTTA(cfg, model), model


@pytest.mark.parametrize("legacy", [False, True])
def test_tta_on_tiny_model_returns_boxes_inside_the_image(legacy):
    tta, model = _tta(legacy)
    height, width = 40, 56
    image = random_image(height, width).to(torch.uint8)
    out = tta([{"image": image}])
    instances = out[0]["instances"]
    assert instances.image_size == (height, width)
    assert 0 < len(instances) <= 200
    boxes = instances.pred_boxes.tensor
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= width).all()
    assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= height).all()
    assert (instances.scores[:-1] >= instances.scores[1:]).all()
    assert model.training is False


def test_tta_pass_maps_boxes_back_to_the_original_image():
    tta, _ = _tta()
    image = random_image(40, 56).to(torch.uint8)
    direct = tta._run_pass(image, TTAPass())
    # The flip pass on the mirrored image runs the model on ``image`` itself, so
    # its boxes, mapped to the mirrored image, are the mirror of the direct ones.
    flipped = tta._run_pass(image.flip(-1), TTAPass(flip=True))
    assert torch.equal(direct.scores, flipped.scores)
    mirrored = direct.pred_boxes.tensor[:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1.0, -1.0, 1.0])
    mirrored[:, 0::2] += 56
    assert torch.allclose(flipped.pred_boxes.tensor, mirrored, atol=1e-4)
    enlarged = tta._run_pass(image, TTAPass((2.0,)))
    with torch.no_grad():
        at_twice = tta.model.inference([{"image": _resize_twice(image)}], do_postprocess=False)[0]
    assert enlarged.image_size == (40, 56)
    # Passes are not clipped: the released test clips only the merged boxes.
    torch.testing.assert_close(enlarged.pred_boxes.tensor, at_twice.pred_boxes.tensor / 2.0)
    assert enlarged.pred_boxes.tensor[:, 2].max() > 56


def _resize_twice(image):
    array = cv2.resize(
        image.permute(1, 2, 0).numpy(), (0, 0), fx=2.0, fy=2.0, interpolation=cv2.INTER_LINEAR
    )
    return torch.from_numpy(array).permute(2, 0, 1)


def test_tta_needs_a_model_with_unclipped_inference():
    retinanet = build_model(srn_cfg("RetinaNet_mini.yaml"))
    with pytest.raises(TypeError, match="TEST.AUG.ENABLED.*RetinaNet"):
        SRNWithTTA(tiny_srn_cfg(), retinanet)


def test_tta_rescales_to_requested_output_size():
    tta, _ = _tta()
    image = random_image(40, 56).to(torch.uint8)
    instances = tta([{"image": image, "height": 80, "width": 112}])[0]["instances"]
    assert instances.image_size == (80, 112)
    boxes = instances.pred_boxes.tensor
    assert len(boxes) > 0 and boxes[:, 2].max() <= 112 and boxes[:, 3].max() <= 80
