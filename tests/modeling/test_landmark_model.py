"""The landmark branch: coding, loss on a hand-made case, inference, training from the mapper, nothing when off."""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, Keypoints
from detectron2.utils.events import EventStorage

from srn_d2.data import SRNDatasetMapper
from srn_d2.modeling import TwoStepPredictions
from srn_d2.modeling.anchor_labelling import AnchorLabels
from srn_d2.modeling.landmarks import LandmarkCoder, landmark_loss
from srn_testing import build_tiny_srn, face_instances, random_image, tiny_srn_cfg

LEVELS = ("p2", "p3", "p4", "p5", "p6", "p7")


def landmark_cfg():
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.LANDMARKS.ENABLED = True
    return cfg


def test_coding_relative_to_anchor_centre_and_size():
    coder = LandmarkCoder((10.0, 5.0))
    anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    points = torch.tensor([[[5.0, 10.0], [15.0, 30.0], [0.0, 0.0]]])
    # Offsets from the centre (5, 10) in anchor widths / heights, times (10, 5).
    expected = torch.tensor([[0.0, 0.0, 10.0, 5.0, -5.0, -2.5]])
    torch.testing.assert_close(coder.get_deltas(anchors, points), expected)
    torch.testing.assert_close(coder.apply_deltas(expected, anchors), points)


def test_coding_round_trip_on_many_anchors():
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(1000, 2, generator=generator) * 500
    anchors = torch.cat([corners, corners + 1 + torch.rand(1000, 2, generator=generator) * 300], 1)
    points = torch.rand(1000, 5, 2, generator=generator) * 800 - 100
    coder = LandmarkCoder((1.0, 1.0))
    torch.testing.assert_close(
        coder.apply_deltas(coder.get_deltas(anchors, points), anchors), points, atol=1e-3, rtol=0
    )


ANCHOR = [0.0, 0.0, 10.0, 10.0]
# Centre (5, 5), size 10: a point at (10, 5) has offsets (0.5, 0); at (5, 15), (0, 1).
# Smooth L1 of zero predictions, beta 0.1: 0.45 for 0.5, 0.95 for 1, 0 for 0.
HAND_MADE_POINTS = [[10, 5, 2], [10, 5, 2], [5, 15, 1], [10, 5, 2], [0, 0, 0]]
HAND_MADE_SUM = 3 * 0.45 + 0.95  # the unannotated point adds nothing; the occluded one counts


def test_landmark_loss_on_hand_made_points():
    points = torch.tensor([HAND_MADE_POINTS], dtype=torch.float)
    loss = landmark_loss(
        torch.zeros(1, 10), torch.tensor([ANCHOR]), points, LandmarkCoder((1.0, 1.0)), beta=0.1
    )
    assert loss.item() == pytest.approx(HAND_MADE_SUM)


def test_model_loss_trains_positives_with_landmarks_divided_by_their_count():
    """Step 2 has positives on p2 (a face with landmarks) and p6 (a face without): only p2's trains."""
    model = build_tiny_srn(landmark_cfg())
    plan = model.plan
    anchors = {level: Boxes(torch.tensor([ANCHOR, ANCHOR])) for level in LEVELS}

    def maps(levels, dim):
        return {level: torch.zeros(1, 2, dim) for level in levels}

    predictions = TwoStepPredictions(
        maps(plan.stc_levels, 1),
        maps(plan.str_levels, 4),
        maps(LEVELS, 1),
        maps(LEVELS, 4),
        maps(LEVELS, 10),
    )
    step1 = {level: torch.tensor([[1, 1]]) for level in LEVELS}
    step2 = {
        level: torch.tensor([[0, 1]] if level in ("p2", "p6") else [[1, 1]]) for level in LEVELS
    }
    gt_boxes = {level: torch.tensor([[ANCHOR, ANCHOR]]) for level in LEVELS}
    with_points = torch.tensor(HAND_MADE_POINTS, dtype=torch.float)
    keypoints = {
        level: torch.stack([with_points if level == "p2" else torch.zeros(5, 3), with_points])[None]
        for level in LEVELS
    }
    anchors = {k: a.tensor for k, a in anchors.items()}
    losses, _ = model.loss(
        anchors,
        anchors,
        predictions,
        AnchorLabels(step1, gt_boxes, None),
        AnchorLabels(step2, gt_boxes, keypoints),
    )
    # One trained anchor (the second anchors are background although their keypoints are set).
    assert losses["loss_landmarks"].item() == pytest.approx(0.5 * HAND_MADE_SUM / 1)
    assert set(losses) == {
        "loss_cls_step1",
        "loss_box_step1",
        "loss_cls_step2",
        "loss_box_step2",
        "loss_landmarks",
    }


def test_inference_keypoints_follow_their_boxes_through_postprocessing():
    """With zero box and landmark predictors every box is its anchor and every point the box's centre."""
    model = build_tiny_srn(landmark_cfg()).eval()
    shared = model.head.shared
    for conv in (shared.bbox_pred, shared.landmark_pred):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    model.test_score_thresh = 0.0
    with torch.no_grad():
        raw = model.inference([{"image": random_image(70, 90)}], do_postprocess=False)[0]
        (out,) = model([{"image": random_image(70, 90), "height": 140, "width": 135}])
    assert len(raw) > 10
    centres = raw.pred_boxes.get_centers()
    assert raw.pred_keypoints.shape == (len(raw), 5, 3)
    torch.testing.assert_close(
        raw.pred_keypoints[..., :2], centres[:, None].expand(-1, 5, -1), atol=1e-3, rtol=0
    )
    torch.testing.assert_close(raw.pred_keypoints[..., 2], raw.scores[:, None].expand(-1, 5))
    # Rescaled by 135 / 90 and 140 / 70 with their boxes; the boxes are then clipped, the points not.
    result = out["instances"]
    assert len(result) == len(raw)
    expected = centres * torch.tensor([135 / 90, 140 / 70])
    torch.testing.assert_close(
        result.pred_keypoints[..., :2], expected[:, None].expand(-1, 5, -1), atol=1e-3, rtol=0
    )
    torch.testing.assert_close(result.pred_keypoints[..., 2], result.scores[:, None].expand(-1, 5))


@pytest.mark.slow
def test_trains_from_the_mapper_on_mini_faces(mini_faces_root, monkeypatch):
    monkeypatch.setenv("SRN_DATASETS", mini_faces_root)
    cfg = landmark_cfg()
    cfg.DATASETS.TRAIN = ("mini_faces_train",)
    cfg.INPUT.SQUARE_SIZE_TRAIN = 128
    mapper = SRNDatasetMapper(cfg, is_train=True)
    assert mapper.use_keypoint and list(mapper.keypoint_hflip_indices) == [1, 0, 2, 4, 3]
    np.random.seed(0)
    batch = [mapper(record) for record in DatasetCatalog.get("mini_faces_train")[:4]]
    assert all(isinstance(x["instances"].gt_keypoints, Keypoints) for x in batch)
    model = build_tiny_srn(cfg).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    history = []
    with EventStorage():
        for _ in range(8):
            losses = model(batch)
            assert all(torch.isfinite(value) for value in losses.values())
            history.append(losses["loss_landmarks"].item())
            optimizer.zero_grad()
            # The landmark loss alone: its gradient must reach the predictor and lower it.
            losses["loss_landmarks"].backward()
            optimizer.step()
    assert history[0] > 0 and (np.diff(history) < 0).all() and history[-1] < 0.9 * history[0], (
        history
    )


def test_dataset_without_landmarks_is_refused_by_name():
    cfg = landmark_cfg()
    cfg.DATASETS.TRAIN = ("mini_faces_train", "widerface_train")
    with pytest.raises(
        ValueError, match=r"DATASETS.TRAIN = .*has no landmarks in \['widerface_train'\]"
    ):
        SRNDatasetMapper(cfg, is_train=True)


def test_off_adds_nothing():
    without = build_tiny_srn(tiny_srn_cfg())
    with_landmarks = build_tiny_srn(landmark_cfg())
    names = set(without.state_dict())
    assert set(with_landmarks.state_dict()) - names == {
        "head.shared.landmark_pred.weight",
        "head.shared.landmark_pred.bias",
    }
    # The other weights start equal: the landmark predictor is initialized last.
    for name, value in without.state_dict().items():
        torch.testing.assert_close(with_landmarks.state_dict()[name], value, rtol=0, atol=0)
    without.eval()
    with torch.no_grad():
        result = without([{"image": random_image(64, 64)}])[0]["instances"]
    with EventStorage():
        losses = without.train()(
            [
                {
                    "image": random_image(64, 64),
                    "instances": face_instances((64, 64), [[4, 4, 40, 40]]),
                }
            ]
        )
    assert not result.has("pred_keypoints") and "loss_landmarks" not in losses


# Each point's offset from its anchor's centre, in anchor widths / heights: the image's left eye
# left of the centre, the right one mirrored, and so the mouth corners. Mirrored and swapped, a face
# keeps these offsets; mirrored and not swapped, its left eye would be right of the centre.
POINT_OFFSETS = torch.tensor([[-0.2, -0.1], [0.2, -0.1], [0.0, 0.05], [-0.15, 0.3], [0.15, 0.3]])


@pytest.mark.parametrize("inclusive", [False, True])
def test_multi_scale_test_carries_landmarks_through_flips_resizes_and_the_vote(inclusive):
    """With zero box deltas every box is its anchor and each point sits at a fixed offset in it. Each
    pass maps points back with its boxes; a flipped pass that did not swap left and right would put
    the left eye right of the centre, and the vote would mix the two."""
    from srn_d2.modeling.test_time_augmentation import SRNWithTTA

    cfg = landmark_cfg()
    cfg.TEST.AUG.ENABLED = True
    cfg.TEST.AUG.SRN.MAX_SIZE = 120
    cfg.TEST.AUG.SRN.INCLUSIVE_PIXEL_BOXES = inclusive
    model = build_tiny_srn(cfg).eval()
    shared = model.head.shared
    for conv in (shared.bbox_pred, shared.landmark_pred):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    with torch.no_grad():
        shared.landmark_pred.bias.copy_(
            POINT_OFFSETS.flatten().repeat(shared.landmark_pred.bias.numel() // 10)
        )
    model.test_score_thresh = 0.0
    tta = SRNWithTTA(cfg, model)
    assert len(tta.passes(70, 90)) >= 4 and any(p.flip for p in tta.passes(70, 90))
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 70, 90))).float()
    result = tta([{"image": image}])[0]["instances"]
    boxes = result.pred_boxes.tensor
    inside = (
        (boxes[:, 0] > 0)
        & (boxes[:, 1] > 0)
        & (boxes[:, 2] < 90 - tta.offset)
        & (boxes[:, 3] < 70 - tta.offset)
    )
    assert int(inside.sum()) > 5
    # The coding's sizes are x2 - x1 in both box conventions; the maps back are linear in both.
    sizes = boxes[inside, 2:] - boxes[inside, :2]
    centres = (boxes[inside, :2] + boxes[inside, 2:]) / 2
    expected = centres[:, None] + POINT_OFFSETS.double() * sizes[:, None]
    torch.testing.assert_close(result.pred_keypoints[inside, :, :2], expected, atol=1e-3, rtol=0)
    torch.testing.assert_close(result.pred_keypoints[..., 2], result.scores[:, None].expand(-1, 5))
