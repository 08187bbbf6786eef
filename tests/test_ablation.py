"""The main job (make demo) end to end, on a budget of two iterations per model."""
import json
import os
import subprocess
import sys

import cv2
import pytest
import torch

from srn_d2 import model_zoo
from srn_d2.data.mini_faces import mini_faces_split_paths
from srn_d2.data.wider_face import load_wider_face
from srn_d2.engine import setup_cfg
from srn_d2.tools.ablation import COLUMNS, DETECTORS, record_with_most_faces


@pytest.mark.parametrize("srn_config, retinanet_config", [
    ("SRN_mini.yaml", "RetinaNet_mini.yaml"),
    ("SRN_R_50_FPN_widerface.yaml", "RetinaNet_R_50_FPN_widerface.yaml"),
])
def test_srn_and_its_retinanet_baseline_share_data_schedule_and_anchors(srn_config, retinanet_config):
    srn, retinanet = (setup_cfg(model_zoo.get_config_file(name)) for name in (srn_config, retinanet_config))
    for key in ("SOLVER", "INPUT", "DATASETS", "DATALOADER", "TEST"):
        assert srn[key] == retinanet[key], key
    assert srn.MODEL.ANCHOR_GENERATOR == retinanet.MODEL.ANCHOR_GENERATOR
    assert srn.MODEL.RESNETS == retinanet.MODEL.RESNETS
    assert srn.MODEL.MINI_RESNET == retinanet.MODEL.MINI_RESNET
    assert srn.MODEL.SRN.OUT_CHANNELS == retinanet.MODEL.FPN.OUT_CHANNELS
    assert srn.SEED == retinanet.SEED


@pytest.mark.timeout(600)
def test_main_job_trains_both_on_one_budget_and_writes_its_outputs(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, SRN_DATASETS=str(tmp_path / "datasets"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "srn_d2.tools.ablation", "--output", str(out),
           "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()",
           "SOLVER.IMS_PER_BATCH", "2", "INPUT.SQUARE_SIZE_TRAIN", "128", "DATALOADER.NUM_WORKERS", "0"]
    # Run away from the checkout: the configs ship inside the package.
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    rows = json.loads((out / "results.json").read_text())
    assert [row["model"] for row in rows] == list(DETECTORS)
    for row in rows:
        assert set(row) == set(COLUMNS)
        assert all(0.0 <= row[k] <= 100.0 for k in COLUMNS if k.startswith("AP_"))
        assert row["infer_ms"] > 0
        # Both trained for exactly the overridden budget: the final checkpoint is after iteration 1.
        final = torch.load(out / row["model"] / "model_final.pth", map_location="cpu", weights_only=False)
        assert final["iteration"] == 1
    srn, retinanet = rows
    assert srn["params_M"] != retinanet["params_M"]

    table = proc.stdout[proc.stdout.index("SRN vs RetinaNet"):]
    assert table.splitlines()[2].split()[0] == "---------"
    assert [line.split()[0] for line in table.splitlines()[3:5]] == ["SRN", "RetinaNet"]

    curves = cv2.imread(str(out / "pr_curves.png"))
    assert curves is not None and curves.shape[1] > curves.shape[0]
    # Both panels show the val image with the most faces, drawn at scale 2.
    image_root, gt_file = mini_faces_split_paths(str(tmp_path / "datasets" / "mini_faces"), "val")
    record = record_with_most_faces(load_wider_face(gt_file, image_root))
    detections = cv2.imread(str(out / "detections.jpg"))
    assert detections.shape[:2] == (2 * record["height"], 2 * 2 * record["width"])
