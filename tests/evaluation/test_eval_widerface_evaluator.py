"""WiderFaceEvaluator, the dict / .mat ground-truth loaders and the command line."""

import json
import os

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.evaluation import COCOEvaluator
from scipy.io import savemat

from srn_d2 import add_srn_config
from srn_d2.engine import SRNTrainer
from srn_d2.evaluation import (
    FDDBEvaluator,
    WiderFaceEvaluator,
    build_evaluator,
    evaluate_widerface,
    load_widerface_gt_mat,
    read_widerface_predictions,
    widerface_gt_from_dicts,
)
from srn_d2.evaluation.widerface_gt import WiderFaceGroundTruth, size_bin_names, with_size_bins
from srn_d2.tools.evaluate_widerface import main as widerface_cli

# One image: a 60 px face (easy), a 30 px face (medium), a 10 px face (hard only)
# and an invalid 40 px face (no setting).
FACES = [
    ([0, 0, 60, 60], 0),
    ([100, 0, 30, 30], 0),
    ([200, 0, 10, 10], 0),
    ([300, 0, 40, 40], 1),
]
DATASET = "test_eval_tiny_faces"


def _dataset_dicts():
    return [
        {
            "file_name": "unused.jpg",
            "image_id": "0--Tiny/img_1",
            "height": 400,
            "width": 400,
            "annotations": [
                {
                    "bbox": box,
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "category_id": 0,
                    "iscrowd": invalid,
                    "invalid": invalid,
                }
                for box, invalid in FACES
            ],
        },
        {
            "file_name": "unused2.jpg",
            "image_id": "1--Empty/img_2",
            "height": 400,
            "width": 400,
            "annotations": [],
        },
    ]


@pytest.fixture(scope="module")
def tiny_dataset():
    if DATASET not in DatasetCatalog.list():
        DatasetCatalog.register(DATASET, _dataset_dicts)
        MetadataCatalog.get(DATASET).set(
            thing_classes=["face"], evaluator_type="widerface", difficulty_by_size=(50, 20)
        )
    return DATASET


def _instances(xywhs):
    xywhs = np.asarray(xywhs, dtype=np.float32).reshape(-1, 5)
    instances = Instances((400, 400))
    xyxy = np.concatenate([xywhs[:, :2], xywhs[:, :2] + xywhs[:, 2:4]], 1)
    instances.pred_boxes = Boxes(torch.from_numpy(xyxy))
    instances.scores = torch.from_numpy(xywhs[:, 4])
    instances.pred_classes = torch.zeros(len(xywhs), dtype=torch.int64)
    return instances


# A false positive above every face, then the four faces in order.
OUTPUTS = [
    [500, 500, 20, 20, 0.99],
    [0, 0, 60, 60, 0.9],
    [100, 0, 30, 30, 0.8],
    [200, 0, 10, 10, 0.7],
    [300, 0, 40, 40, 0.6],
]


def test_settings_from_dataset_dicts():
    gt = widerface_gt_from_dicts(_dataset_dicts(), (50, 20))
    assert gt.image_ids == ("0--Tiny/img_1", "1--Empty/img_2")
    assert gt.listed["easy"].tolist() == [True, False, False, False]
    assert gt.listed["medium"].tolist() == [True, True, False, False]
    assert gt.listed["hard"].tolist() == [True, True, True, False]


@pytest.mark.parametrize("distributed", [False, True])
def test_evaluator_hand_worked(tiny_dataset, tmp_path, distributed):
    evaluator = WiderFaceEvaluator(tiny_dataset, output_dir=str(tmp_path), distributed=distributed)
    evaluator.reset()
    evaluator.process([{"image_id": "0--Tiny/img_1"}], [{"instances": _instances(OUTPUTS)}])
    results = evaluator.evaluate()
    assert list(results) == ["widerface"]
    r = results["widerface"]
    assert set(r) == {
        "AP_easy",
        "AP_medium",
        "AP_hard",
        "AP_hard_IoU50",
        "AP_hard_IoU60",
        "AP_hard_IoU70",
        "AP_hard_IoU80",
        "AP_hard_COCO",
        "FP_at_recall80",
        "FP_at_recall90",
    }
    # Scores normalize to 1, .77, .51, .26, 0: five separate thresholds.
    # hard (3 faces; the invalid face's box is discarded):
    #   (0, 0), (1/3, 1/2), (2/3, 2/3), (1, 3/4) -> envelope 3/4 throughout -> AP 3/4.
    assert r["AP_hard"] == pytest.approx(75.0)
    # easy (the 60 px face; the 30 and 10 px boxes are discarded): (0, 0), (1, 1/2) -> 1/2.
    assert r["AP_easy"] == pytest.approx(50.0)
    # medium: (0, 0), (1/2, 1/2), (1, 2/3) -> 1/2 * 2/3 + 1/2 * 2/3 = 2/3.
    assert r["AP_medium"] == pytest.approx(200.0 / 3)
    # Boxes are exact, so every IoU threshold gives the IoU-0.5 AP.
    for key in ("AP_hard_IoU50", "AP_hard_IoU60", "AP_hard_IoU70", "AP_hard_IoU80", "AP_hard_COCO"):
        assert r[key] == pytest.approx(75.0)
    # Recall reaches 80% and 90% only at 100%: 4 kept, 3 recalled.
    assert r["FP_at_recall80"] == 1 and r["FP_at_recall90"] == 1

    assert evaluator.pr_curves["hard"].recall[-1] == pytest.approx(1.0)
    # The submission files give the same result; the face-less image has no file.
    written = tmp_path / "widerface_predictions" / "0--Tiny" / "img_1.txt"
    assert written.read_text().splitlines()[:2] == ["img_1", "5"]
    gt = widerface_gt_from_dicts(_dataset_dicts())
    with pytest.warns(UserWarning, match="1 image"):
        from_files = read_widerface_predictions(
            str(tmp_path / "widerface_predictions"), gt.image_ids
        )
    assert evaluate_widerface(from_files, gt)["hard"].ap == pytest.approx(0.75)


def test_evaluator_needs_a_ground_truth_source():
    MetadataCatalog.get("test_eval_no_gt").set(thing_classes=["face"])
    with pytest.raises(ValueError, match="test_eval_no_gt"):
        WiderFaceEvaluator("test_eval_no_gt")


def test_config_and_builder(tiny_dataset, tmp_path):
    cfg = get_cfg()
    add_srn_config(cfg)
    assert WiderFaceEvaluator.from_config(cfg, tiny_dataset)._gt_dir is None
    cfg.TEST.WIDERFACE_GT_DIR = "/elsewhere/ground_truth"
    assert build_evaluator(cfg, tiny_dataset)._gt_dir == "/elsewhere/ground_truth"
    MetadataCatalog.get("test_eval_fddb_like").set(evaluator_type="fddb")
    assert isinstance(build_evaluator(cfg, "test_eval_fddb_like"), FDDBEvaluator)
    coco_json = tmp_path / "coco.json"
    coco_json.write_text(
        json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "face"}]})
    )
    MetadataCatalog.get("test_eval_coco_like").set(evaluator_type="coco", json_file=str(coco_json))
    assert isinstance(build_evaluator(cfg, "test_eval_coco_like"), COCOEvaluator)
    # The trainer and the tools share this one dispatcher; a dataset without a type names itself.
    assert (
        SRNTrainer.build_evaluator.__func__(SRNTrainer, cfg, tiny_dataset)._gt_dir
        == "/elsewhere/ground_truth"
    )
    MetadataCatalog.get("test_eval_untyped").set(thing_classes=["face"])
    with pytest.raises(ValueError, match="test_eval_untyped.*evaluator_type None"):
        build_evaluator(cfg, "test_eval_untyped")


def _cell(items):
    array = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        array[i, 0] = item
    return array


def write_official_mats(gt_dir, events):
    """Official-layout .mat files of
    events = {event: {image: (faces (m, 4), {setting: 1-based indices})}}."""
    names = list(events)
    common = dict(
        event_list=_cell(names),
        file_list=_cell([_cell(list(events[e])) for e in names]),
        face_bbx_list=_cell(
            [
                _cell([np.asarray(f, np.float64).reshape(-1, 4) for f, _ in events[e].values()])
                for e in names
            ]
        ),
    )
    savemat(os.path.join(gt_dir, "wider_face_val.mat"), common)
    for setting in ("easy", "medium", "hard"):
        gt_list = _cell(
            [
                _cell(
                    [
                        np.asarray(ls[setting], np.uint8).reshape(-1, 1)
                        for _, ls in events[e].values()
                    ]
                )
                for e in names
            ]
        )
        savemat(os.path.join(gt_dir, f"wider_{setting}_val.mat"), dict(common, gt_list=gt_list))


def test_command_line(tmp_path, capsys):
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    all_lists = {"easy": [1], "medium": [1, 2], "hard": [1, 2, 3]}
    write_official_mats(
        str(gt_dir),
        {
            "0--Tiny": {"img_1": ([f for f, _ in FACES], all_lists)},
            "1--Other": {"img_9": ([[10, 10, 50, 50]], {"easy": [1], "medium": [1], "hard": [1]})},
        },
    )
    gt = load_widerface_gt_mat(str(gt_dir))
    assert gt.image_ids == ("0--Tiny/img_1", "1--Other/img_9")
    assert gt.listed["medium"].tolist() == [True, True, False, False, True]

    pred_dir = tmp_path / "pred"
    (pred_dir / "0--Tiny").mkdir(parents=True)
    (pred_dir / "0--Tiny" / "img_1.txt").write_text(
        "img_1\n5\n" + "".join("%g %g %g %g %g\n" % tuple(o) for o in OUTPUTS)
    )
    out_json, out_png = tmp_path / "ap.json", tmp_path / "pr.png"
    with pytest.warns(UserWarning, match="1 image"):
        assert (
            widerface_cli(
                [
                    "--pred",
                    str(pred_dir),
                    "--gt-dir",
                    str(gt_dir),
                    "--json",
                    str(out_json),
                    "--plot",
                    str(out_png),
                ]
            )
            == 0
        )
    aps = json.loads(out_json.read_text())
    # img_9's face is never found. easy: (0, 0), (1/2, 1/2) -> 1/4;
    # medium: (0, 0), (1/3, 1/2), (2/3, 2/3) -> 2/3 * 2/3;
    # hard: (0, 0), (1/4, 1/2), (2/4, 2/3), (3/4, 3/4) -> 3/4 * 3/4.
    assert aps == pytest.approx({"easy": 0.25, "medium": 4 / 9, "hard": 9 / 16})
    assert out_png.stat().st_size > 0
    assert "hard" in capsys.readouterr().out


def test_size_bins_list_hard_faces_by_size():
    gt = with_size_bins(widerface_gt_from_dicts(_dataset_dicts(), (50, 20)), [30, 60])
    assert size_bin_names([30, 60]) == ["<30px", "30-60px", ">=60px"]
    # Faces of 60, 30, 10 px and the invalid 40 px face, which no bin lists; an edge opens the upper bin.
    assert gt.listed["<30px"].tolist() == [False, False, True, False]
    assert gt.listed["30-60px"].tolist() == [False, True, False, False]
    assert gt.listed[">=60px"].tolist() == [True, False, False, False]
    assert gt.listed["hard"].tolist() == [True, True, True, False]


@given(
    sizes=st.lists(
        st.floats(0, 500, allow_nan=False, allow_subnormal=False), min_size=1, max_size=40
    ),
    edges=st.lists(
        st.floats(0.5, 400, allow_nan=False, allow_subnormal=False),
        min_size=1,
        max_size=6,
        unique=True,
    ),
    invalid=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_size_bins_split_the_hard_set(sizes, edges, invalid):
    boxes = np.array([[0, 0, s, s] for s in sizes], dtype=np.float64)
    hard = ~np.array(invalid[: len(sizes)])
    gt = WiderFaceGroundTruth(
        ("a/1",),
        boxes,
        np.array([0, len(sizes)]),
        {"easy": hard.copy(), "medium": hard.copy(), "hard": hard},
    )
    binned = with_size_bins(gt, sorted(edges))
    counts = np.sum([binned.listed[name] for name in size_bin_names(sorted(edges))], axis=0)
    # Every hard face in exactly one bin, no other face in any.
    assert counts.tolist() == hard.astype(int).tolist()


@pytest.mark.parametrize("edges", [[], [20, 10], [0, 10], [10, float("inf")], [10, 10]])
def test_size_bins_refuse_bad_edges(edges):
    gt = widerface_gt_from_dicts(_dataset_dicts(), (50, 20))
    with pytest.raises(ValueError, match="--size-bins"):
        with_size_bins(gt, edges, key="--size-bins")


def test_command_line_dataset_and_size_bins(tiny_dataset, tmp_path, capsys):
    pred_dir = tmp_path / "pred"
    (pred_dir / "0--Tiny").mkdir(parents=True)
    # The 60 px face, a false positive, the 30 px face, another false positive, the 10 px face.
    rows = [
        [0, 0, 60, 60, 0.9],
        [500, 500, 20, 20, 0.8],
        [100, 0, 30, 30, 0.7],
        [500, 0, 20, 20, 0.65],
        [200, 0, 10, 10, 0.6],
    ]
    (pred_dir / "0--Tiny" / "img_1.txt").write_text(
        "img_1\n5\n" + "".join("%g %g %g %g %g\n" % tuple(r) for r in rows)
    )
    out_json = tmp_path / "ap.json"
    with pytest.warns(UserWarning, match="1 image"):
        assert (
            widerface_cli(
                [
                    "--pred",
                    str(pred_dir),
                    "--dataset",
                    tiny_dataset,
                    "--size-bins",
                    "20",
                    "50",
                    "--json",
                    str(out_json),
                ]
            )
            == 0
        )
    aps = json.loads(out_json.read_text())
    # Detections of faces outside a bin are discarded, not false positives:
    # <20px: FP, FP, the 10 px face -> 1/3; 20-50px: FP, the 30 px face -> 1/2; >=50px: found first -> 1.
    # medium: (1/2, 1), (1, 2/3) -> 5/6; hard: (1/3, 1), (2/3, 2/3), (1, 3/5) -> (1 + 2/3 + 3/5) / 3 = 34/45.
    assert aps == pytest.approx(
        {
            "easy": 1.0,
            "medium": 5 / 6,
            "hard": 34 / 45,
            "<20px": 1 / 3,
            "20-50px": 1 / 2,
            ">=50px": 1.0,
        }
    )
    assert "20-50px" in capsys.readouterr().out


def test_command_line_refuses_bad_ground_truth_choices(tiny_dataset, tmp_path, capsys):
    pred = str(tmp_path)
    assert widerface_cli(["--pred", pred, "--dataset", "no_such_dataset"]) == 2
    assert "--dataset = 'no_such_dataset': is not a registered dataset" in capsys.readouterr().err
    assert (
        widerface_cli(["--pred", pred, "--dataset", tiny_dataset, "--size-bins", "50", "20"]) == 2
    )
    assert "--size-bins = [50.0, 20.0]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        widerface_cli(["--pred", pred, "--dataset", tiny_dataset, "--gt-dir", pred])
    with pytest.raises(SystemExit):
        widerface_cli(["--pred", pred])
