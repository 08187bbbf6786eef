"""The SRN-vs-RetinaNet study (make demo): configs on one budget, the table, the picture, end to end."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from srn_d2 import model_zoo
from srn_d2.data.mini_faces import mini_faces_split_paths
from srn_d2.data.wider_face import load_wider_face
from srn_d2.engine import setup_cfg
from srn_d2.apps.study import (
    DEMO_MODELS,
    DETECTORS,
    FALSE_POSITIVE,
    METRICS,
    MISSED,
    TRUE_POSITIVE,
    detection_panel,
    directions_table,
    format_cell,
    parse_model,
    record_with_most_faces,
    study_table,
)
from srn_testing import TINY_STUDY


def _baseline(config_file):
    """Detectron2's RetinaNet on the network of a study model's config."""
    for backbone in ("MobileNetV3Small", "MobileNetV3", "R_50"):
        if backbone in config_file:
            return f"RetinaNet_{backbone}_mini.yaml"
    return "RetinaNet_mini.yaml"


@pytest.mark.parametrize(
    "srn_config, retinanet_config",
    [
        *[
            (d.config_file, _baseline(d.config_file))
            for d in {
                d.config_file: d
                for name, d in sorted(DETECTORS.items())
                if not name.startswith("RetinaNet")
            }.values()
        ],
        ("SRN_R_50_FPN_widerface.yaml", "RetinaNet_R_50_FPN_widerface.yaml"),
    ],
)
def test_srn_and_its_retinanet_baseline_share_data_schedule_and_anchors(
    srn_config, retinanet_config
):
    srn, retinanet = (
        setup_cfg(model_zoo.get_config_file(name)) for name in (srn_config, retinanet_config)
    )
    for key in ("DATASETS", "DATALOADER", "TEST", "SOLVER"):
        assert srn[key] == retinanet[key], key
    assert srn.MODEL.ANCHOR_GENERATOR == retinanet.MODEL.ANCHOR_GENERATOR
    assert srn.SEED == retinanet.SEED
    # timm's networks take RGB images; the same pixels either way.
    assert {**srn.INPUT, "FORMAT": None} == {**retinanet.INPUT, "FORMAT": None}
    assert srn.MODEL.TIMM == retinanet.MODEL.TIMM
    if "MobileNet" in srn_config:
        # Detectron2's GroupNorm needs 32 channels: RetinaNet keeps them under the 16-channel smallest SRN.
        assert retinanet.MODEL.FPN.OUT_CHANNELS == max(srn.MODEL.SRN.OUT_CHANNELS, 32)
    else:
        assert srn.MODEL.RESNETS == retinanet.MODEL.RESNETS
        assert srn.MODEL.MINI_RESNET == retinanet.MODEL.MINI_RESNET
        assert srn.MODEL.SRN.OUT_CHANNELS == retinanet.MODEL.FPN.OUT_CHANNELS


def _flat(node, prefix=""):
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _differing_keys(a, b):
    a, b = (_flat(setup_cfg(model_zoo.get_config_file(name))) for name in (a, b))
    return sorted(
        key for key in set(a) | set(b) if a.get(key) != b.get(key) and key != "OUTPUT_DIR"
    )


@pytest.mark.parametrize(
    "scale, srn", [("mini", "SRN_mini.yaml"), ("R_50_FPN_widerface", "SRN_R_50_FPN_widerface.yaml")]
)
def test_the_paper_rows_differ_from_the_row_before_in_exactly_their_module(scale, srn):
    base = f"RetinaNet_paper_{scale}"
    assert _differing_keys(srn, base + ".yaml") == [
        "MODEL.SRN.HEAD_NAME",
        "MODEL.SRN.STC_LEVELS",
        "MODEL.SRN.STR_LEVELS",
    ]
    assert _differing_keys(base + ".yaml", base + "_STC.yaml") == ["MODEL.SRN.STC_LEVELS"]
    assert _differing_keys(base + ".yaml", base + "_STR.yaml") == ["MODEL.SRN.STR_LEVELS"]
    assert _differing_keys(base + "_STC.yaml", base + "_STC_STR.yaml") == ["MODEL.SRN.STR_LEVELS"]
    assert _differing_keys(base + "_STC_STR.yaml", srn) == ["MODEL.SRN.HEAD_NAME"]


def test_model_entries_carry_their_own_overrides():
    label, detector, opts = parse_model("STC_p3:MODEL.SRN.LOSS_NORMALIZATION=per_loss")
    assert label == "STC_p3:MODEL.SRN.LOSS_NORMALIZATION=per_loss"
    assert detector.config_file == "RetinaNet_paper_mini.yaml"
    assert opts == ("MODEL.SRN.STC_LEVELS", "['p3']", "MODEL.SRN.LOSS_NORMALIZATION", "per_loss")
    with pytest.raises(ValueError, match="--models = 'SRNN': names no model"):
        parse_model("SRNN")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_model("SRN:MODEL.SRN.HEAD_INIT")


def test_directions_compare_means_by_their_standard_error():
    def rows(model, key, values):
        return [{"model": model, "seed": seed, key: value} for seed, value in enumerate(values, 1)]

    # SRN - paper_RetinaNet on hard AP: means 91 and 88, sample variances 1 and 1, n = 3:
    # difference +3.0, standard error sqrt(1/3 + 1/3) = 0.816; 3.0 > 2 * 0.816: reproduced.
    table = directions_table(
        rows("SRN", "AP_hard", [90, 91, 92]) + rows("paper_RetinaNet", "AP_hard", [87, 88, 89])
    )
    line = next(line for line in table.splitlines() if "SRN beats the paper's RetinaNet" in line)
    assert "+3.0 ± 0.8" in line and "reproduced" in line
    # The same gap with a spread three times as large is within two standard errors.
    table = directions_table(
        rows("SRN", "AP_hard", [88, 91, 94]) + rows("paper_RetinaNet", "AP_hard", [85, 88, 91])
    )
    assert "within 2 SE" in table and "+3.0 ± 2.4" in table
    # STC with more false positives than its baseline, by far: the paper's direction reversed.
    table = directions_table(
        rows("paper_STC", "FP_at_recall90", [900, 1000, 1100])
        + rows("paper_RetinaNet", "FP_at_recall90", [500, 510, 520])
    )
    assert "reversed" in table and "+490.0 ± 58.0" in table
    # One seed per model gives no spread: nothing is claimed.
    assert (
        directions_table(rows("SRN", "AP_hard", [90]) + rows("paper_RetinaNet", "AP_hard", [88]))
        == ""
    )


def test_cells_are_one_value_or_mean_and_sample_deviation():
    assert format_cell([91.234], 1) == "91.2"
    # mean 2, sample standard deviation sqrt(((1-2)^2 + (3-2)^2) / 1) = 1.414
    assert format_cell([1.0, 3.0], 2) == "2.00 ± 1.41"
    # A run that never reaches 90% recall has infinitely many false positives there.
    assert format_cell([318.0, float("inf"), 40.0], 0) == "318 / inf / 40"
    assert format_cell([float("inf")], 0) == "inf"
    # A model without landmarks has no landmark error.
    assert format_cell([], 2) == "-"
    rows = [
        {"model": model, "seed": seed, **{key: float(seed) for key, _, _ in METRICS}}
        for seed in (1, 2, 3)
        for model in ("SRN", "RetinaNet")
    ]
    lines = study_table(rows).splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["SRN", "RetinaNet"]
    assert lines[2].split("|")[3].strip() == "3"
    assert lines[2].split("|")[4].strip() == "2.0 ± 1.0"


def test_detection_panel_colours_true_and_false_positives_and_missed_faces():
    image = np.zeros((100, 120, 3), np.uint8)
    faces = np.array([[10, 10, 20, 20], [60, 60, 30, 30], [90, 10, 20, 20]], dtype=np.float64)
    boxes = np.array(
        [
            [10, 10, 30, 30],  # face 0: true positive
            [11, 10, 31, 30],  # face 0 again, lower score: false positive
            [40, 5, 55, 20],  # nothing: false positive
            [60, 60, 90, 90],  # face 1, below the score threshold: not drawn, face 1 missed
        ],
        dtype=np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.3], dtype=np.float32)
    panel = detection_panel(image, faces, boxes, scores, 0.5, "SRN", scale=2)
    caption = panel.shape[0] - 200
    assert panel.shape == (200 + caption, 240, 3) and caption > 0

    def colour(x, y):
        return tuple(int(c) for c in panel[caption + y, x])

    assert colour(20, 40) == TRUE_POSITIVE  # left edge of box 0 at x = 20
    assert colour(110, 20) == FALSE_POSITIVE  # right edge of box 2 at x = 110
    assert colour(62, 20) == FALSE_POSITIVE  # right edge of box 1 at x = 62
    assert colour(120, 150) == MISSED and colour(180, 30) == MISSED  # faces 1 and 2
    assert colour(150, 150) == (0, 0, 0)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_study_trains_every_model_on_one_budget_and_reports_mean_and_spread(
    tmp_path, mini_faces_root
):
    out = tmp_path / "study"
    env = dict(os.environ, SRN_DATASETS=mini_faces_root, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "srn_d2.tools.ablation",
        "--output",
        str(out),
        "--seeds",
        "2",
        *TINY_STUDY,
    ]
    # Run away from the checkout: the configs ship inside the package.
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    rows = json.loads((out / "results.json").read_text())
    assert [(row["model"], row["seed"]) for row in rows] == [
        (m, s) for s in (1, 2) for m in DEMO_MODELS
    ]
    for row in rows:
        # The demo's models have no landmarks, so no landmark error.
        assert set(row) == {"model", "seed", *(key for key, _, _ in METRICS)} - {"NME"}
        assert all(0.0 <= row[k] <= 100.0 for k in row if k.startswith("AP_"))
        final = torch.load(
            out / f"{row['model']}_seed{row['seed']}" / "model_final.pth",
            map_location="cpu",
            weights_only=False,
        )
        assert final["iteration"] == 1
    # Different seeds start from different weights.
    srn_weights = [
        torch.load(
            out / f"SRN_seed{seed}" / "model_final.pth", map_location="cpu", weights_only=False
        )["model"]
        for seed in (1, 2)
    ]
    assert any(not torch.equal(a, srn_weights[1][k]) for k, a in srn_weights[0].items())

    table = (out / "table.md").read_text()
    assert table in proc.stdout
    assert (
        "mean ± standard deviation over seeds 1..2" in table
        and "mini_faces_val (300 images)" in table
    )
    study_part, rest = table.split("The paper's directions")
    model_lines = [
        line for line in study_part.splitlines() if line.startswith(("| SRN ", "| RetinaNet "))
    ]
    assert len(model_lines) == 2 and all(" ± " in line for line in model_lines)
    # Two seeds of SRN and Detectron2's RetinaNet measure one of the paper's directions.
    directions = rest.split("The paper's ablation")[0]
    assert (
        "SRN beats Detectron2's RetinaNet on hard AP" in directions
        and "SRN - RetinaNet" in directions
    )
    paper = [
        [cell.strip() for cell in line.split("|")[1:-1]]
        for line in table.splitlines()
        if "+ STC + STR" in line
    ]
    assert paper == [["+ STC + STR", "STC STR", "paper_STC_STR", "96.1", "95.0", "90.1"]]

    curves = cv2.imread(str(out / "pr_curves.png"))
    assert curves is not None and curves.shape[1] > curves.shape[0]
    image_root, gt_file, _ = mini_faces_split_paths(
        os.path.join(mini_faces_root, "mini_faces"), "val"
    )
    record = record_with_most_faces(load_wider_face(gt_file, image_root))
    detections = cv2.imread(str(out / "detections.jpg"))
    assert detections.shape[1] == 2 * 2 * record["width"]
    assert detections.shape[0] > 2 * record["height"]
