"""Landmark error (NME): pairing faces with detections, the normalizer, the evaluator's report."""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from srn_d2.evaluation import WiderFaceEvaluator
from srn_d2.evaluation.landmark_error import face_landmark_errors, landmark_metrics

POINTS_A = np.array(
    [[30, 40, 2], [70, 40, 2], [50, 55, 1], [35, 75, 2], [65, 75, 0]], dtype=np.float64
)
GT_XYWH = np.array([[0, 0, 100, 100], [200, 0, 50, 50], [300, 300, 40, 40]], dtype=np.float64)
GT_KEYPOINTS = np.stack([POINTS_A, np.zeros((5, 3)), POINTS_A + [300, 300, 0]])


def detections():
    """d1 on face A (score 0.9, every point 5 px off), d2 on A (0.5, far off), d3 on B (no landmarks)."""
    xywhs = np.array([[1, 1, 100, 98, 0.9], [2, 0, 97, 100, 0.5], [201, 1, 50, 50, 0.8]])
    points = np.stack([POINTS_A[:, :2] + [3, 4], POINTS_A[:, :2] + 40, np.zeros((5, 2))])
    return xywhs, points


def test_best_scoring_detection_of_each_face_with_landmarks_is_scored():
    errors, missed = face_landmark_errors(*detections(), GT_XYWH, GT_KEYPOINTS)
    # Face A: 4 annotated points (the occluded one counts, the unannotated one not), each 5 px off,
    # over sqrt(100 * 100); face B has no landmarks; face C is not detected.
    np.testing.assert_allclose(errors, [5 / 100])
    assert missed == 1


def test_a_lower_iou_than_half_pairs_nothing():
    xywhs, points = detections()
    xywhs[0, :4] = [50, 0, 100, 100]  # IoU with A about 1/3
    xywhs = xywhs[:1]
    errors, missed = face_landmark_errors(xywhs, points[:1], GT_XYWH, GT_KEYPOINTS)
    assert len(errors) == 0 and missed == 2


def test_no_detections_or_no_faces():
    errors, missed = face_landmark_errors(
        np.zeros((0, 5)), np.zeros((0, 5, 2)), GT_XYWH, GT_KEYPOINTS
    )
    assert len(errors) == 0 and missed == 2
    errors, missed = face_landmark_errors(*detections(), np.zeros((0, 4)), np.zeros((0, 5, 3)))
    assert len(errors) == 0 and missed == 0


def test_metrics_by_hand():
    metrics = landmark_metrics(np.array([0.02, 0.07, 0.2]), 4)
    assert metrics["NME"] == pytest.approx(100 * 0.29 / 3)
    assert metrics["NME<0.05"] == pytest.approx(100 / 3) and metrics["NME<0.1"] == pytest.approx(
        200 / 3
    )
    assert metrics["landmark_faces"] == 3 and metrics["landmark_faces_missed"] == 4


def _register(name, with_keypoints):
    def faces():
        annotations = []
        for box, points in zip(GT_XYWH, GT_KEYPOINTS):
            face = {
                "bbox": box.tolist(),
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 0,
                "iscrowd": 0,
            }
            if with_keypoints:
                face["keypoints"] = points.ravel().tolist()
            annotations.append(face)
        return [
            {
                "file_name": "x.jpg",
                "image_id": "e/x",
                "height": 400,
                "width": 400,
                "annotations": annotations,
            }
        ]

    if name not in DatasetCatalog:
        DatasetCatalog.register(name, faces)
        MetadataCatalog.get(name).set(thing_classes=["face"], difficulty_by_size=(50, 20))


def _outputs(with_keypoints):
    xywhs, points = detections()
    instances = Instances((400, 400))
    instances.pred_boxes = Boxes(
        torch.tensor(np.concatenate([xywhs[:, :2], xywhs[:, :2] + xywhs[:, 2:4]], 1))
    )
    instances.scores = torch.tensor(xywhs[:, 4])
    instances.pred_classes = torch.zeros(3, dtype=torch.long)
    if with_keypoints:
        instances.pred_keypoints = torch.tensor(
            np.concatenate([points, np.ones((3, 5, 1))], 2), dtype=torch.float32
        )
    return [{"instances": instances}]


@pytest.mark.parametrize(
    "dataset_has, model_has, reported",
    [(True, True, True), (True, False, False), (False, True, False)],
)
def test_evaluator_reports_landmark_error_when_both_sides_have_landmarks(
    dataset_has, model_has, reported
):
    name = f"landmark_error_test_{dataset_has}"
    _register(name, dataset_has)
    evaluator = WiderFaceEvaluator(name, distributed=False)
    evaluator.reset()
    evaluator.process([{"image_id": "e/x"}], _outputs(model_has))
    results = evaluator.evaluate()["widerface"]
    assert ("NME" in results) == reported
    if reported:
        assert results["NME"] == pytest.approx(5.0)
        assert results["NME<0.1"] == pytest.approx(100.0) and results["landmark_faces_missed"] == 1
