"""FDDB discrete ROC (srn_d2.evaluation.fddb_protocol, FDDBEvaluator, command line)."""

import json
import math

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from srn_d2.evaluation import FDDBEvaluator, ellipse_box_overlaps, evaluate_fddb
from srn_d2.tools.evaluate_fddb import main as fddb_cli
from srn_d2.evaluation.fddb_protocol import rasterize_ellipse, true_positive_steps
from srn_d2.evaluation.prediction_files import write_fddb_detections

# ra = 2, rb = 1, axis-aligned, centered on pixel (5, 5): the pixels with
# (dx / 2)^2 + dy^2 <= 1 are dy = 0, dx = -2..2 (5) and dx = 0, dy = +-1 (2): 7 pixels.
FLAT = [2.0, 1.0, 0.0, 5.0, 5.0]


def test_ellipse_pixels():
    x0, y0, mask = rasterize_ellipse(FLAT)
    assert mask.sum() == 7
    rows, cols = np.nonzero(mask)
    assert set(zip((cols + x0).tolist(), (rows + y0).tolist())) == {
        (3, 5),
        (4, 5),
        (5, 5),
        (6, 5),
        (7, 5),
        (5, 4),
        (5, 6),
    }
    # Center rounded, semi-axes truncated as the official tool draws them.
    assert rasterize_ellipse([2.9, 1.7, 0.0, 5.4, 4.6])[2].sum() == 7
    # Radius-10 circle: 317 lattice points (Gauss circle problem, N(10) = 317).
    assert rasterize_ellipse([10, 10, 0.3, 50, 50])[2].sum() == 317


def test_hand_worked_overlaps():
    boxes = np.array(
        [
            [3, 5, 4, 0],  # pixels x 3..7 on row 5: the ellipse's middle row -> 5 / 7
            [5, 4, 0, 2],  # column x = 5, rows 4..6 -> 3 / 7
            [0, 0, 10, 10],  # 11 x 11 = 121 pixels holding the ellipse -> 7 / 121
            [20, 20, 5, 5],  # disjoint -> 0
            [4, 4, 2, 2],  # 3 x 3 block around the center: 5 ellipse pixels -> 5 / (7 + 9 - 5)
        ],
        dtype=np.float64,
    )
    overlaps = ellipse_box_overlaps(np.array([FLAT]), boxes)
    np.testing.assert_allclose(overlaps[0], [5 / 7, 3 / 7, 7 / 121, 0, 5 / 11])


def test_rotation_follows_image_axes():
    # theta = pi/4, y pointing down: the major axis runs from top-left to bottom-right.
    # ra = 3, rb = 0 (drawn one pixel wide): pixels (5 + d, 5 + d) with |d| * sqrt(2) <= 3.
    line = [3.0, 0.0, math.pi / 4, 5.0, 5.0]
    x0, y0, mask = rasterize_ellipse(line)
    rows, cols = np.nonzero(mask)
    pixels = sorted(zip((cols + x0).tolist(), (rows + y0).tolist()))
    assert pixels == [(3, 3), (4, 4), (5, 5), (6, 6), (7, 7)]
    boxes = np.array([[3, 3, 2, 2], [5, 3, 2, 2]], dtype=np.float64)
    # The top-left 3 x 3 block holds 3 of the 5 pixels: 3 / (5 + 9 - 3);
    # the top-right block only the center: 1 / (5 + 9 - 1).
    np.testing.assert_allclose(ellipse_box_overlaps(np.array([line]), boxes)[0], [3 / 11, 1 / 13])


def test_clipping_to_the_image():
    # The flat ellipse centered on (1, 5) spans columns -1..3; column -1 is outside
    # the image, so 4 + 2 = 6 of its 7 pixels remain.
    ellipse = np.array([[2.0, 1.0, 0.0, 1.0, 5.0]])
    box = np.array([[-10, 0, 20, 10]], dtype=np.float64)  # clipped to x 0..9, y 0..9: 100 pixels
    assert ellipse_box_overlaps(ellipse, box, image_size=(10, 10))[0, 0] == pytest.approx(6 / 100)
    # Unclipped: 7 pixels inside a 21 x 11 rectangle.
    assert ellipse_box_overlaps(ellipse, box)[0, 0] == pytest.approx(7 / 231)


def test_hungarian_matching_beats_greedy():
    # Detection A overlaps E1 by 0.9 and E2 by 0.6; B overlaps only E1, by 0.7.
    # With A alone: A-E1 -> 1 TP. With both, maximum total overlap is A-E2 + B-E1 = 1.3
    # (greedy A-E1 would give 0.9): 2 TPs.
    overlaps = np.array([[0.9, 0.7, 0.0], [0.6, 0.0, 0.0]])
    scores = np.array([0.9, 0.8, 0.95])  # the third detection overlaps nothing
    thresholds, counts = true_positive_steps(overlaps, scores)
    np.testing.assert_array_equal(thresholds, [0.9, 0.8])
    np.testing.assert_array_equal(counts, [1, 2])
    # A matched pair counts only above 0.5 overlap.
    thresholds, counts = true_positive_steps(np.array([[0.5, 0.4]]), np.array([0.7, 0.6]))
    np.testing.assert_array_equal(counts, [0, 0])


def test_skipping_unchanged_assignments_matches_full_recomputation():
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(3)
    for _ in range(200):
        num_annots, num_dets = int(rng.integers(1, 5)), int(rng.integers(1, 30))
        shape = (num_annots, num_dets)
        overlaps = rng.uniform(0, 1, shape) * (rng.random(shape) < 0.5)
        scores = np.round(rng.uniform(0, 1, num_dets), 1)  # ties
        thresholds, counts = true_positive_steps(overlaps, scores)
        for threshold, count in zip(thresholds, counts):
            block = overlaps[:, scores >= threshold]
            rows, cols = linear_sum_assignment(block, maximize=True)
            assert count == np.count_nonzero(block[rows, cols] > 0.5)


def test_roc_and_tpr_at_false_positives():
    circle = np.array([[10.0, 10.0, 0.0, 50.0, 50.0]])
    exact = [40, 40, 20, 20]  # pixels 40..60: 441, circle 317 inside -> 0.719
    ground_truth = {"img_a": (circle, None), "img_b": (circle, None), "img_c": (circle, None)}
    detections = {
        "img_a": np.array([exact + [0.9], [0, 0, 5, 5, 0.95], [45, 45, 10, 10, 0.5]]),
        "img_b": np.array([exact + [0.6], [0, 0, 5, 5, 0.7]]),
        "unknown": np.array([exact + [0.99]]),
    }
    roc = evaluate_fddb(detections, ground_truth)
    assert roc.num_faces == 3
    np.testing.assert_array_equal(roc.thresholds, [0.95, 0.9, 0.7, 0.6, 0.5])
    np.testing.assert_array_equal(roc.true_positives, [0, 1, 1, 2, 2])
    # The 10 x 10 box inside the matched circle is a false positive (one-to-one matching).
    np.testing.assert_array_equal(roc.false_positives, [1, 1, 2, 2, 3])
    assert roc.tpr_at_false_positives(0) == 0.0
    assert roc.tpr_at_false_positives(1) == pytest.approx(1 / 3)
    assert roc.tpr_at_false_positives(2) == pytest.approx(2 / 3)
    assert roc.tpr_at_false_positives(1000) == pytest.approx(2 / 3)


def _fddb_dicts():
    return [
        {
            "file_name": "a.jpg",
            "image_id": "2002/08/11/big/img_1",
            "height": 100,
            "width": 100,
            "annotations": [
                {
                    "bbox": [40, 40, 20, 20],
                    "bbox_mode": 1,
                    "category_id": 0,
                    "ellipse": [10.0, 10.0, 0.0, 50.0, 50.0],
                }
            ],
        },
        {
            "file_name": "b.jpg",
            "image_id": "2002/08/11/big/img_2",
            "height": 100,
            "width": 100,
            "annotations": [
                {
                    "bbox": [10, 10, 20, 20],
                    "bbox_mode": 1,
                    "category_id": 0,
                    "ellipse": [10.0, 10.0, 0.0, 20.0, 20.0],
                }
            ],
        },
    ]


def test_fddb_evaluator(tmp_path):
    name = "test_eval_fddb_tiny"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, _fddb_dicts)
        MetadataCatalog.get(name).set(thing_classes=["face"], evaluator_type="fddb")
    evaluator = FDDBEvaluator(name, output_dir=str(tmp_path), distributed=False)
    evaluator.reset()
    instances = Instances((100, 100))
    instances.pred_boxes = Boxes(torch.tensor([[40.0, 40.0, 60.0, 60.0], [0.0, 0.0, 5.0, 5.0]]))
    instances.scores = torch.tensor([0.9, 0.3])
    instances.pred_classes = torch.zeros(2, dtype=torch.int64)
    evaluator.process([{"image_id": "2002/08/11/big/img_1"}], [{"instances": instances}])
    results = evaluator.evaluate()
    # One of two faces found, one false positive: TPR 50% at <= 1000 FP.
    assert results == {"fddb": {"TPR_at_1000FP": pytest.approx(50.0)}}
    assert evaluator.roc.false_positives[-1] == 1
    written = (tmp_path / "fddb_detections.txt").read_text().splitlines()
    assert written[:2] == ["2002/08/11/big/img_1", "2"]
    assert written[4:] == ["2002/08/11/big/img_2", "0"]


def test_fddb_command_line(tmp_path, capsys):
    gt_dir = tmp_path / "FDDB-folds"
    gt_dir.mkdir()
    (gt_dir / "FDDB-fold-01-ellipseList.txt").write_text(
        "2002/08/11/big/img_1\n1\n10 10 0 50 50 1\n2002/08/11/big/img_2\n1\n10 10 0 20 20 1\n"
    )
    pred = tmp_path / "dets.txt"
    write_fddb_detections(
        str(pred),
        {
            "2002/08/11/big/img_1": np.array([[40, 40, 20, 20, 0.9]]),
            "2002/08/11/big/img_2": np.array([[70, 70, 20, 20, 0.8]]),
        },
    )
    out = tmp_path / "fddb.json"
    assert fddb_cli(["--pred", str(pred), "--gt-dir", str(gt_dir), "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == {"TPR_at_1000FP": 0.5}
    assert "TPR at 1000 false positives" in capsys.readouterr().out
