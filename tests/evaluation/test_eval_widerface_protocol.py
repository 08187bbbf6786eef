"""Hand-worked checks of the WIDER FACE protocol (srn_d2.evaluation.widerface_protocol)."""

import math

import numpy as np
import pytest

from srn_d2.evaluation.widerface_gt import WiderFaceGroundTruth
from srn_d2.evaluation.widerface_protocol import (
    WiderFaceMatches,
    best_overlaps,
    evaluate_widerface,
    match_image,
    normalize_scores,
    official_iou,
    voc_ap,
    widerface_metrics,
)


def make_gt(faces_by_image, unlisted=()):
    """faces_by_image: {image_id: [[x, y, w, h], ...]}; unlisted: (image_id, face index)
    pairs that count in no setting. Every other face counts in all three settings."""
    image_ids = list(faces_by_image)
    boxes = [np.asarray(faces_by_image[i], dtype=np.float64).reshape(-1, 4) for i in image_ids]
    mask = np.ones(sum(len(b) for b in boxes), dtype=bool)
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in boxes])])
    for image_id, face in unlisted:
        mask[offsets[image_ids.index(image_id)] + face] = False
    listed = {setting: mask.copy() for setting in ("easy", "medium", "hard")}
    return WiderFaceGroundTruth(tuple(image_ids), np.concatenate(boxes), offsets, listed)


def preds(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


# Two images, three faces, four predictions.
TWO_IMAGES = {"a/1": [[0, 0, 10, 10], [100, 100, 10, 10]], "b/2": [[0, 0, 20, 20]]}
TWO_IMAGE_PREDS = {
    "a/1": preds([0, 0, 10, 10, 0.9], [50, 50, 10, 10, 0.8], [100, 100, 10, 10, 0.6]),
    "b/2": preds([0, 0, 20, 20, 0.7]),
}


def test_two_images_three_faces_four_predictions():
    # Normalized over [0.6, 0.9]: 1.0 (TP), 0.667 (FP, hits nothing), 0.333 (TP, image b), 0.0 (TP).
    # Each enters at a different threshold t_k = 1 - k/1000, so the curve visits
    # (recall, precision) = (1/3, 1), (1/3, 1/2), (2/3, 2/3), (1, 3/4).
    # Envelope: 1 at recall 1/3, 3/4 at 2/3 and at 1.
    # AP = 1/3 * 1 + 1/3 * 3/4 + 1/3 * 3/4 = 5/6.
    curves = evaluate_widerface(TWO_IMAGE_PREDS, make_gt(TWO_IMAGES))
    hard = curves["hard"]
    assert hard.ap == pytest.approx(5 / 6, abs=1e-12)
    assert hard.num_faces == 3
    # t_333 = 0.667 > 0.6667 >= t_334 = 0.666: the FP enters at k = 334.
    assert hard.num_kept[332] == 1 and hard.num_kept[333] == 2
    # The lowest normalized score (0) passes only t_1000 = 0.
    assert hard.num_kept[998] == 3 and hard.num_kept[999] == 4
    assert hard.num_recalled[999] == 3


# One image, faces F1, F2, F3; prediction p3 finds F2 with the second highest score.
ONE_IMAGE_FACES = [[0, 0, 10, 10], [100, 100, 10, 10], [200, 0, 20, 20]]
ONE_IMAGE_PREDS = {
    "a/1": preds(
        [0, 0, 10, 10, 0.9],  # p1 on F1
        [100, 100, 10, 10, 0.85],  # p3 on F2
        [50, 50, 10, 10, 0.8],  # p2 on nothing
        [200, 0, 20, 20, 0.7],  # p4 on F3
    )
}


def test_discarding_predictions_on_unlisted_faces():
    # Normalized: p1 1.0, p3 0.75, p2 0.5, p4 0.0: four separate thresholds.
    # F2 listed: (1/3, 1), (2/3, 1), (2/3, 2/3), (1, 3/4) -> AP = 1/3 + 1/3 + 1/3 * 3/4 = 11/12.
    listed = evaluate_widerface(ONE_IMAGE_PREDS, make_gt({"a/1": ONE_IMAGE_FACES}))["hard"]
    assert listed.ap == pytest.approx(11 / 12, abs=1e-12)
    # F2 unlisted: p3 is discarded, 2 faces count:
    # (1/2, 1), (1/2, 1), (1/2, 1/2), (1, 2/3) -> AP = 1/2 + 1/2 * 2/3 = 5/6.
    gt = make_gt({"a/1": ONE_IMAGE_FACES}, unlisted=[("a/1", 1)])
    discarded = evaluate_widerface(ONE_IMAGE_PREDS, gt)["hard"]
    assert discarded.ap == pytest.approx(5 / 6, abs=1e-12)
    assert discarded.num_kept[-1] == 3
    # Without F2 at all, p3 is a false positive:
    # (1/2, 1), (1/2, 1/2), (1/2, 1/3), (1, 1/2) -> AP = 1/2 + 1/2 * 1/2 = 3/4.
    absent = make_gt({"a/1": [ONE_IMAGE_FACES[0], ONE_IMAGE_FACES[2]]})
    assert evaluate_widerface(ONE_IMAGE_PREDS, absent)["hard"].ap == pytest.approx(3 / 4, abs=1e-12)


def test_min_max_normalization():
    assert normalize_scores(np.array([2.0, 4.0, 3.0])) == pytest.approx([0.0, 1.0, 0.5])
    # Equal scores (0/0 in the official tool) all pass every threshold.
    assert normalize_scores(np.array([0.3, 0.3])) == pytest.approx([1.0, 1.0])

    gt = make_gt({"a/1": [[0, 0, 10, 10], [100, 100, 10, 10]]})
    # Raw scores 0.5006 and 0.5004 sit between the same two thresholds (0.501 and 0.500);
    # normalized to 1 and 0, the FP enters at t_1 and the TP only at t_1000.
    close = {"a/1": preds([50, 50, 10, 10, 0.5006], [0, 0, 10, 10, 0.5004])}
    hard = evaluate_widerface(close, gt)["hard"]
    assert hard.num_kept[0] == 1 and hard.num_recalled[0] == 0
    assert hard.num_kept[998] == 1 and hard.num_recalled[999] == 1
    # (0, 0), (1/2, 1/2) -> AP = 1/4. Any increasing affine map of the scores gives the same.
    assert hard.ap == pytest.approx(0.25)
    shifted = {"a/1": close["a/1"] * [1, 1, 1, 1, 7] + [0, 0, 0, 0, -3]}
    assert evaluate_widerface(shifted, gt)["hard"].ap == pytest.approx(0.25)


def test_normalization_spans_images_without_faces_but_not_unknown_images():
    gt = make_gt({"a/1": ONE_IMAGE_FACES, "b/empty": []})
    reference = evaluate_widerface(ONE_IMAGE_PREDS, gt)["hard"]
    # A prediction on a face-less image only widens the score range (official: such
    # images are skipped after normalization), so the curve keeps its shape.
    widened = dict(ONE_IMAGE_PREDS, **{"b/empty": preds([0, 0, 5, 5, 2.0])})
    with_empty = evaluate_widerface(widened, gt)["hard"]
    assert with_empty.ap == pytest.approx(reference.ap)
    assert with_empty.num_kept[-1] == reference.num_kept[-1]
    # p1 (0.9) is now normalized to (0.9 - 0.7) / 1.3 = 0.1538: it enters at t_847 = 0.153.
    assert with_empty.num_kept[845] == 0 and with_empty.num_kept[846] == 1
    # Images outside the ground truth are ignored entirely, normalization included.
    unknown = dict(ONE_IMAGE_PREDS, **{"z/unknown": preds([0, 0, 5, 5, 2.0])})
    ignored = evaluate_widerface(unknown, gt)["hard"]
    np.testing.assert_array_equal(ignored.num_kept, reference.num_kept)


def test_official_iou_uses_plus_one_areas():
    # [0, 0, 10, 10] vs [5, 0, 10, 10]: intersection (10 - 5 + 1) * 11 = 66, areas 121,
    # union 176 -> 0.375 (0.333 without the +1).
    box = np.array([[0, 0, 10, 10]])
    assert official_iou(box, np.array([[5, 0, 10, 10]]))[0, 0] == pytest.approx(0.375)
    # Zero "+1" width: disjoint.
    assert official_iou(box, np.array([[12, 0, 10, 10]]))[0, 0] == 0
    # Touching boxes overlap by one pixel column under the +1 convention.
    assert official_iou(box, np.array([[10, 0, 10, 10]]))[0, 0] == pytest.approx(11 / 231)


def test_iou_threshold_is_inclusive():
    # Face [0, 0, 9, 9] (area 10 * 10); prediction [0, 0, 9, 4] (area 10 * 5) inside it: IoU = 0.5.
    gt = make_gt({"a/1": [[0, 0, 9, 9]]})
    half = {"a/1": preds([0, 0, 9, 4, 1.0])}
    assert evaluate_widerface(half, gt, iou_threshold=0.5)["hard"].ap == pytest.approx(1.0)
    assert evaluate_widerface(half, gt, iou_threshold=0.51)["hard"].ap == 0.0


def test_best_face_only_and_duplicates():
    # The prediction's best face is F1 (IoU 1) even though it also overlaps F2 by 0.6;
    # a second prediction on F1 adds a kept box but no recall.
    gt = make_gt({"a/1": [[0, 0, 9, 9], [0, 0, 9, 5]]})
    p = {"a/1": preds([0, 0, 9, 9, 0.9], [0, 0, 9, 9, 0.8])}
    hard = evaluate_widerface(p, gt)["hard"]
    assert hard.num_recalled[-1] == 1 and hard.num_kept[-1] == 2
    # (1/2, 1), (1/2, 1/2) -> AP 1/2.
    assert hard.ap == pytest.approx(0.5)


def test_voc_ap():
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    # The envelope lifts earlier points: 0.5 * 0.8 + 0.5 * 0.8.
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([0.6, 0.4, 0.8])) == pytest.approx(0.8)
    # NaN precision (nothing kept yet) is ignored, like MATLAB's max.
    assert voc_ap(np.array([0.0, 0.5]), np.array([np.nan, 1.0])) == pytest.approx(0.5)


def test_false_positives_at_recall():
    hard = evaluate_widerface(TWO_IMAGE_PREDS, make_gt(TWO_IMAGES))["hard"]
    # Recall first reaches 2/3 with 3 kept and 2 recalled; 1.0 with 4 kept, 3 recalled.
    assert hard.false_positives_at_recall(0.6) == 1
    assert hard.false_positives_at_recall(0.3) == 0
    assert hard.false_positives_at_recall(1.0) == 1
    missing_face = evaluate_widerface({"a/1": TWO_IMAGE_PREDS["a/1"]}, make_gt(TWO_IMAGES))["hard"]
    assert missing_face.false_positives_at_recall(0.9) == math.inf


def test_metrics_cover_iou_thresholds():
    # Prediction [0, 0, 9, 6] on face [0, 0, 9, 9]: IoU = 10 * 7 / (10 * 10) = 0.7.
    gt = make_gt({"a/1": [[0, 0, 9, 9]]})
    metrics, curves = widerface_metrics(WiderFaceMatches({"a/1": preds([0, 0, 9, 6, 1.0])}, gt))
    assert set(curves) == {"easy", "medium", "hard"}
    assert metrics["AP_hard_IoU50"] == metrics["AP_hard_IoU60"] == metrics["AP_hard_IoU70"] == 1.0
    assert metrics["AP_hard_IoU80"] == 0.0
    # IoU 0.50, 0.55, ..., 0.70 pass: 5 of 10.
    assert metrics["AP_hard_COCO"] == pytest.approx(0.5)
    assert metrics["FP_at_recall80"] == 0 and metrics["FP_at_recall90"] == 0


def test_no_predictions_and_bad_shapes():
    gt = make_gt(TWO_IMAGES)
    empty = evaluate_widerface({}, gt)["hard"]
    assert empty.ap == 0.0 and empty.num_kept[-1] == 0
    with pytest.raises(ValueError, match="a/1"):
        WiderFaceMatches({"a/1": np.zeros((3, 4))}, gt)


@pytest.mark.parametrize(
    "bad_row",
    [
        [0, 0, 10, 10, np.inf],
        [0, 0, 10, 10, -np.inf],
        [0, 0, 10, 10, np.nan],
        [np.nan, 0, 10, 10, 0.3],
    ],
)
def test_non_finite_predictions_are_an_error_naming_the_image(bad_row):
    # Scored, one +inf would normalize every other score to 0 (-inf: to 1) and change every AP.
    gt = make_gt({"a/1": [[0, 0, 10, 10]], "b/2": [[5, 5, 10, 10]]})
    predictions = {"a/1": preds([0, 0, 10, 10, 0.9]), "b/2": preds([50, 50, 10, 10, 0.2], bad_row)}
    with pytest.raises(ValueError, match=r"predictions of b/2: box 2 is not finite"):
        evaluate_widerface(predictions, gt)


@pytest.mark.parametrize("bad_row", [[0, 0, -3, 10, 0.5], [0, 0, 10, -0.01, 0.5]])
def test_negative_sizes_are_an_error_naming_the_image(bad_row):
    gt = make_gt({"a/1": [[0, 0, 10, 10]]})
    with pytest.raises(
        ValueError, match=r"predictions of a/1: box 2 has a negative width or height"
    ):
        evaluate_widerface({"a/1": preds([0, 0, 10, 10, 0.9], bad_row)}, gt)


@pytest.mark.parametrize("chunk_elements", [1, 3, 7, 1 << 20])
def test_best_overlaps_in_slices_equal_the_whole_matrix(chunk_elements):
    rng = np.random.default_rng(5)
    pred = np.column_stack([rng.uniform(0, 100, (53, 2)), rng.uniform(0, 40, (53, 2))])
    faces = np.column_stack([rng.uniform(0, 100, (7, 2)), rng.uniform(1, 40, (7, 2))])
    iou = official_iou(pred, faces)
    best_face, best_iou = best_overlaps(pred, faces, chunk_elements)
    np.testing.assert_array_equal(best_face, iou.argmax(axis=1))
    np.testing.assert_array_equal(best_iou, iou.max(axis=1))


def test_match_image_on_hand_made_boxes():
    faces = [[0, 0, 10, 10], [100, 100, 10, 10], [200, 200, 20, 20]]
    detections = [
        [0, 0, 10, 10],  # F1, but a higher-scoring box found it first
        [0, 0, 10, 11],  # F1
        [50, 50, 10, 10],  # nothing
        [105, 100, 10, 10],  # F2 at IoU 66 / 176 < 0.5 ("+1" areas)
    ]
    true_positive, found = match_image(detections, [0.9, 0.95, 0.8, 0.7], faces)
    assert true_positive.tolist() == [False, True, False, False]
    assert found.tolist() == [True, False, False]
    true_positive, found = match_image(detections, [0.9, 0.95, 0.8, 0.7], faces, iou_threshold=0.3)
    assert true_positive.tolist() == [False, True, False, True]
    assert found.tolist() == [True, True, False]


def test_match_image_without_detections_or_faces():
    true_positive, found = match_image(np.zeros((0, 4)), np.zeros(0), [[0, 0, 5, 5]])
    assert true_positive.shape == (0,) and found.tolist() == [False]
    true_positive, found = match_image([[0, 0, 5, 5]], [0.5], np.zeros((0, 4)))
    assert true_positive.tolist() == [False] and found.shape == (0,)


def test_match_image_agrees_with_the_dataset_protocol_on_crowded_images():
    # Thousands of boxes around 400 faces: jittered copies (some found twice, some
    # near the IoU threshold) and random boxes; the per-image split must give the
    # protocol's recalled and kept counts at every score threshold.
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 2000, (400, 2))
    faces = np.concatenate([xy, rng.uniform(6, 120, (400, 2))], axis=1).round()
    copies = faces[rng.integers(0, 400, 3000)]
    copies = copies + rng.normal(0, 0.25, copies.shape) * copies[:, [2, 3, 2, 3]]
    copies[:, 2:] = np.maximum(copies[:, 2:], 1)
    noise = np.concatenate(
        [rng.uniform(0, 2000, (1000, 2)), rng.uniform(4, 100, (1000, 2))], axis=1
    )
    detections = np.concatenate([copies, noise])
    scores = rng.permutation(len(detections)) / len(detections)
    gt = make_gt({"a/1": faces})
    curve = evaluate_widerface({"a/1": np.concatenate([detections, scores[:, None]], 1)}, gt)[
        "hard"
    ]
    # Normalized scores are (s - min) / (max - min); threshold t_k keeps raw scores >= this.
    for k in (0, 99, 499, 999):
        raw_threshold = curve.thresholds[k] * (scores.max() - scores.min()) + scores.min()
        kept = scores >= raw_threshold - 1e-12
        true_positive, found = match_image(detections[kept], scores[kept], faces)
        assert true_positive.sum() == found.sum() == curve.num_recalled[k]
        assert kept.sum() == curve.num_kept[k]
    assert 0 < curve.num_recalled[-1] < 400
