"""Checks on the real WIDER FACE val ground truth (skipped when it is not found):
file loading, perfect predictions, and equivalence with a literal, loop-by-loop
re-implementation of the official MATLAB evaluation.

The ground truth is looked up in $SRN_WIDERFACE_GT_DIR, then shared/widerface_val_gt
next to or above the checkout, then datasets/widerface/eval_tools/ground_truth.
"""

import math

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances

from srn_d2.evaluation import WiderFaceEvaluator
from srn_testing import widerface_val_gt_dir
from srn_d2.evaluation.widerface_gt import SETTINGS, WiderFaceGroundTruth, load_widerface_gt_mat
from srn_d2.evaluation.widerface_protocol import WiderFaceMatches, evaluate_widerface

GT_DIR = widerface_val_gt_dir()
pytestmark = pytest.mark.skipif(
    GT_DIR is None, reason="WIDER FACE val ground truth (.mat) not found"
)


@pytest.fixture(scope="module")
def val_gt():
    return load_widerface_gt_mat(GT_DIR)


# ---- Literal port of the official MATLAB evaluation (read_pred.m sorting, norm_score.m,
# ---- evaluation.m: image_evaluation / image_pr_info / dataset_pr_info, boxoverlap.m,
# ---- VOCap.m). Slow on purpose: it keeps the official control flow.


def _matlab_max(a, b):
    # MATLAB's max ignores NaN.
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return max(a, b)


def boxoverlap(a, b):
    """IoU of boxes a (k, 4 as x1 y1 x2 y2) with one box b, "+1" areas."""
    x1 = np.maximum(a[:, 0], b[0])
    y1 = np.maximum(a[:, 1], b[1])
    x2 = np.minimum(a[:, 2], b[2])
    y2 = np.minimum(a[:, 3], b[3])
    w = x2 - x1 + 1
    h = y2 - y1 + 1
    inter = w * h
    aarea = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    barea = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        o = inter / (aarea + barea - inter)
    o[w <= 0] = 0
    o[h <= 0] = 0
    return o


def norm_score(pred_list):
    max_score = float(np.finfo(np.float32).tiny)
    min_score = float(np.finfo(np.float32).max)
    for pred in pred_list:
        if pred is None or len(pred) == 0:
            continue
        max_score = max(max_score, pred[:, 4].max())
        min_score = min(min_score, pred[:, 4].min())
    out = []
    for pred in pred_list:
        if pred is None or len(pred) == 0:
            out.append(pred)
            continue
        pred = pred.copy()
        pred[:, 4] = (pred[:, 4] - min_score) / (max_score - min_score)
        out.append(pred)
    return out


def image_evaluation(pred_info, gt_bbx, ignore, iou_thresh):
    pred_recall = np.zeros(len(pred_info))
    recall_list = np.zeros(len(gt_bbx))
    proposal_list = np.ones(len(pred_info))
    pred_info = pred_info.copy()
    gt_bbx = gt_bbx.copy()
    pred_info[:, 2] = pred_info[:, 0] + pred_info[:, 2]
    pred_info[:, 3] = pred_info[:, 1] + pred_info[:, 3]
    gt_bbx[:, 2] = gt_bbx[:, 0] + gt_bbx[:, 2]
    gt_bbx[:, 3] = gt_bbx[:, 1] + gt_bbx[:, 3]
    for h in range(len(pred_info)):
        overlap_list = boxoverlap(gt_bbx, pred_info[h, :4])
        idx = int(np.argmax(overlap_list))
        max_overlap = overlap_list[idx]
        if max_overlap >= iou_thresh:
            if ignore[idx] == 0:
                recall_list[idx] = -1
                proposal_list[h] = -1
            elif recall_list[idx] == 0:
                recall_list[idx] = 1
        pred_recall[h] = np.count_nonzero(recall_list == 1)
    return pred_recall, proposal_list


def image_pr_info(thresh_num, pred_info, proposal_list, pred_recall):
    info = np.zeros((thresh_num, 2))
    for t in range(1, thresh_num + 1):
        thresh = 1 - t / thresh_num
        r_index = np.flatnonzero(pred_info[:, 4] >= thresh)
        if r_index.size == 0:
            info[t - 1] = 0
        else:
            r = r_index[-1]
            info[t - 1, 0] = np.count_nonzero(proposal_list[: r + 1] == 1)
            info[t - 1, 1] = pred_recall[r]
    return info


def dataset_pr_info(thresh_num, org_pr_curve, count_face):
    curve = np.zeros((thresh_num, 2))
    for i in range(thresh_num):
        with np.errstate(divide="ignore", invalid="ignore"):
            curve[i, 0] = org_pr_curve[i, 1] / org_pr_curve[i, 0]
            curve[i, 1] = org_pr_curve[i, 1] / count_face
    return curve


def vocap(rec, prec):
    mrec = [0.0] + list(rec) + [1.0]
    mpre = [0.0] + list(prec) + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = _matlab_max(mpre[i], mpre[i + 1])
    ap = 0.0
    for i in range(1, len(mrec)):
        if mrec[i] != mrec[i - 1]:
            ap += (mrec[i] - mrec[i - 1]) * mpre[i]
    return ap


def reference_ap(boxes_per_image, preds_per_image, keep_per_image, iou_thresh=0.5, thresh_num=1000):
    """Official AP of one setting.

    boxes_per_image: list of (m, 4) xywh; preds_per_image: list of (n, 5) xywh+score
    or None; keep_per_image: list of 1-based listed face indices.
    """
    # read_pred.m: each image's boxes sorted by score, descending (MATLAB's sort is stable).
    sorted_preds = [
        None if p is None or len(p) == 0 else p[np.argsort(-p[:, 4], kind="stable")]
        for p in preds_per_image
    ]
    norm = norm_score(sorted_preds)
    org = np.zeros((thresh_num, 2))
    count_face = 0
    for gt_bbx, pred_info, keep_index in zip(boxes_per_image, norm, keep_per_image):
        count_face += len(keep_index)
        if len(gt_bbx) == 0 or pred_info is None or len(pred_info) == 0:
            continue
        ignore = np.zeros(len(gt_bbx))
        if len(keep_index):
            ignore[np.asarray(keep_index) - 1] = 1
        gt_bbx = np.asarray(gt_bbx, dtype=float)
        pred_recall, proposal_list = image_evaluation(pred_info, gt_bbx, ignore, iou_thresh)
        org += image_pr_info(thresh_num, pred_info, proposal_list, pred_recall)
    curve = dataset_pr_info(thresh_num, org, count_face)
    return vocap(curve[:, 1], curve[:, 0]), curve


# ---- Tests


def test_loads_official_val_lists(val_gt):
    assert val_gt.num_images == 3226
    assert val_gt.num_faces == 39708
    assert val_gt.image_ids[0] == "0--Parade/0_Parade_marchingband_1_465"
    assert len({image_id.split("/")[0] for image_id in val_gt.image_ids}) == 61
    assert int(np.diff(val_gt.offsets).max()) == 709
    counts = {setting: int(val_gt.listed[setting].sum()) for setting in SETTINGS}
    assert counts == {"easy": 7211, "medium": 13319, "hard": 31958}
    # Every face of an easier setting is also in the harder ones.
    assert not np.any(val_gt.listed["easy"] & ~val_gt.listed["medium"])
    assert not np.any(val_gt.listed["medium"] & ~val_gt.listed["hard"])


def _perfect(gt, keep=None):
    """Ground-truth boxes as predictions with strictly decreasing scores."""
    predictions, rank = {}, 0
    for index, image_id in enumerate(gt.image_ids):
        faces = gt.faces_of(index)
        if keep is not None:
            faces = faces[keep(faces)]
        scores = 1 - (rank + np.arange(len(faces))) / gt.num_faces
        rank += len(faces)
        predictions[image_id] = np.column_stack([faces, scores])
    return predictions


def _recallable(faces):
    # Drop faces whose "+1" width or height is <= 0 (IoU 0 even with themselves) and
    # repeated boxes (a copy's prediction takes the first copy, recalling nothing new).
    ok = (faces[:, 2] > -1) & (faces[:, 3] > -1)
    first = np.zeros(len(faces), dtype=bool)
    first[np.unique(faces, axis=0, return_index=True)[1]] = True
    return ok & first


def test_perfect_predictions(val_gt):
    # One val face (listed in hard) has w or h <= -1: as a prediction such a box is
    # refused, naming its image, rather than scored.
    with pytest.raises(
        ValueError, match=r"39--Ice_Skating/39_Ice_Skating_iceskiing_39_583: box 8 has a negative"
    ):
        evaluate_widerface(_perfect(val_gt), val_gt)
    # Predictions on faces outside a setting's list are discarded. Without that box and
    # an exact copy of another box in 21--Festival/21_Festival_Festival_21_604, precision
    # is 1 everywhere; easy and medium recall everything, hard all but the two faces
    # that no box can recall.
    curves = evaluate_widerface(_perfect(val_gt, _recallable), val_gt)
    assert curves["easy"].ap == 1.0
    assert curves["medium"].ap == 1.0
    assert curves["hard"].num_recalled[-1] == 31956
    assert curves["hard"].ap == pytest.approx(31956 / 31958, abs=1e-12)


def _jittered_predictions(gt, rng):
    predictions = {}
    for index, image_id in enumerate(gt.image_ids):
        if rng.random() < 0.1:
            continue  # no predictions for this image
        faces = gt.faces_of(index)
        found = faces[rng.random(len(faces)) < 0.85]
        size = np.maximum(found[:, 2:4], 1)
        jitter = rng.choice([0.0, 0.05, 0.2], size=(len(found), 1))
        boxes = np.concatenate(
            [
                found[:, :2] + rng.normal(0, 1, (len(found), 2)) * jitter * size,
                size * np.exp(rng.normal(0, 1, (len(found), 2)) * jitter),
            ],
            axis=1,
        )
        doubles = boxes[rng.random(len(boxes)) < 0.2]  # second hits on the same faces
        num_random = int(rng.integers(0, 40))
        random_boxes = np.column_stack(
            [rng.uniform(0, 1000, (num_random, 2)), rng.uniform(4, 120, (num_random, 2))]
        )
        scores = np.concatenate(
            [rng.uniform(0.2, 1, len(boxes) + len(doubles)), rng.uniform(0, 0.6, num_random)]
        )
        boxes = np.concatenate([boxes, doubles, random_boxes])
        # Coarse scores for some images: ties inside and across threshold bins.
        if rng.random() < 0.3:
            scores = np.round(scores, 2)
        predictions[image_id] = np.column_stack([boxes, scores])
    return predictions


def subset_of(gt: WiderFaceGroundTruth, image_ids) -> WiderFaceGroundTruth:
    """The ground truth of some images only, in the given order."""
    position = {image_id: i for i, image_id in enumerate(gt.image_ids)}
    indices = [position[image_id] for image_id in image_ids]
    faces = np.concatenate([np.arange(gt.offsets[i], gt.offsets[i + 1]) for i in indices])
    counts = np.diff(gt.offsets)[indices]
    return WiderFaceGroundTruth(
        image_ids=tuple(gt.image_ids[i] for i in indices),
        boxes=gt.boxes[faces],
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        listed={setting: mask[faces] for setting, mask in gt.listed.items()},
    )


def test_matches_literal_official_implementation(val_gt):
    rng = np.random.default_rng(2024)
    crowded = val_gt.image_ids[int(np.argmax(np.diff(val_gt.offsets)))]  # the 709-face image
    duplicated = "21--Festival/21_Festival_Festival_21_604"
    sampled = rng.choice(val_gt.image_ids, 45, replace=False)
    others = [i for i in sampled if i not in (crowded, duplicated)]
    subset = subset_of(val_gt, [crowded, duplicated] + others)
    predictions = _jittered_predictions(subset, rng)
    # An image outside the evaluated set: ignored, also by the normalization.
    predictions["0--Parade/not_in_the_subset"] = np.array([[0, 0, 10, 10, 50.0]])

    matches = WiderFaceMatches(predictions, subset)
    boxes = [subset.faces_of(i) for i in range(subset.num_images)]
    preds_per_image = [predictions.get(image_id) for image_id in subset.image_ids]
    for setting, iou in [("easy", 0.5), ("medium", 0.5), ("hard", 0.5), ("hard", 0.7)]:
        listed = subset.listed[setting]
        keep = [
            np.flatnonzero(listed[subset.offsets[i] : subset.offsets[i + 1]]) + 1
            for i in range(subset.num_images)
        ]
        expected_ap, expected_curve = reference_ap(boxes, preds_per_image, keep, iou)
        curve = matches.pr_curve(setting, iou)
        assert abs(curve.ap - expected_ap) < 1e-9, (setting, iou)
        assert 0.1 < expected_ap < 0.95, (setting, iou, expected_ap)
        np.testing.assert_allclose(curve.precision, expected_curve[:, 0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(curve.recall, expected_curve[:, 1], rtol=0, atol=1e-12)


def test_evaluator_on_official_ground_truth(val_gt):
    name = "test_eval_widerface_val_official"
    MetadataCatalog.get(name).set(thing_classes=["face"])
    evaluator = WiderFaceEvaluator(name, distributed=False, gt_dir=GT_DIR)
    evaluator.reset()
    for image_id, boxes in _perfect(val_gt, _recallable).items():
        instances = Instances((2000, 2000))
        xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:4]], axis=1)
        instances.pred_boxes = Boxes(torch.from_numpy(xyxy))
        instances.scores = torch.from_numpy(boxes[:, 4])
        instances.pred_classes = torch.zeros(len(boxes), dtype=torch.int64)
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    results = evaluator.evaluate()["widerface"]
    assert results["AP_easy"] == pytest.approx(100.0)
    assert results["AP_medium"] == pytest.approx(100.0)
    assert results["AP_hard"] == pytest.approx(100.0 * 31956 / 31958)
    assert results["FP_at_recall80"] == 0 and results["FP_at_recall90"] == 0
    assert not math.isinf(results["FP_at_recall90"])
    assert set(evaluator.pr_curves) == set(SETTINGS)
