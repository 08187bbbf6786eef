"""ONNX and TorchScript export: the exported graph gives the PyTorch model's detections on
any image size, and the ONNX runtime class and the demo run it without Detectron2's model."""
import json
import re
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from srn_d2.checkpoint import load_inference_weights
from srn_d2.engine import setup_cfg
from srn_d2.released_checkpoint import DEFAULT_CONFIG
from srn_d2.deploy.export import FORMATS, export, exported_runner, verify
from srn_d2.engine import FacePredictor
from srn_d2.tools.export import main
from srn_testing import build_tiny_srn, converted_released_weights, tiny_srn_cfg

# Odd and non-square sides; 41 x 57 leaves P4 below 120 cells, where the official
# config drops the score floor (a choice the traced graph must keep per size).
SIZES = [(160, 128), (97, 131), (41, 57), (300, 200)]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    _, weights = converted_released_weights(str(folder))
    cfg = setup_cfg(DEFAULT_CONFIG, ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"])
    model = build_model(cfg).eval()
    load_inference_weights(model, weights)
    return cfg, model, folder


def _image(height, width, seed):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 4 + 2, width // 4 + 2, 3)).astype(np.uint8)
    return np.ascontiguousarray(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC))


@pytest.mark.parametrize("export_format", FORMATS)
def test_export_gives_the_pytorch_detections_on_any_size(official, export_format):
    cfg, model, folder = official
    path = export(cfg, export_format, str(folder / export_format))
    run = exported_runner(path, export_format)
    for height, width in SIZES:
        image = torch.from_numpy(_image(height, width, height).transpose(2, 0, 1).copy()).float()
        report = verify(model, run, image)  # raises ExportError on any difference beyond tolerance
        assert report["detections"] > 20
        assert report["box_diff_px"] <= 0.01 and report["score_diff"] <= 1e-4


@pytest.mark.parametrize("export_format", FORMATS)
def test_image_without_detections(tmp_path, export_format):
    cfg = tiny_srn_cfg()
    # Untrained scores sit at the 0.01 prior: nothing passes 0.5.
    cfg.MODEL.SRN.SCORE_THRESH_TEST = 0.5
    model = build_tiny_srn(cfg).eval()
    weights = tmp_path / "tiny.pth"
    torch.save({"model": model.state_dict()}, weights)
    cfg.MODEL.WEIGHTS = str(weights)
    run = exported_runner(export(cfg, export_format, str(tmp_path)), export_format)
    boxes, scores, classes = run(np.zeros((3, 75, 91), dtype=np.float32))
    assert boxes.shape == (0, 4) and scores.shape == (0,) and classes.shape == (0,)


def test_onnx_runtime_class_and_demo_give_the_predictor_detections(official, tmp_path):
    from srn_d2.deploy.onnx_runtime import ONNXFaceDetector

    cfg, _, _ = official
    # A test-time resize too: the runtime must resize as Detectron2 does.
    resized = cfg.clone()
    resized.defrost()
    resized.merge_from_list(["INPUT.MIN_SIZE_TEST", "120", "INPUT.MAX_SIZE_TEST", "170"])
    path = export(resized, "onnx", str(tmp_path))
    detector = ONNXFaceDetector(path)
    predictor = FacePredictor(resized)
    bgr = _image(181, 243, 5)
    boxes, scores = detector(bgr)
    expected = predictor(bgr)["instances"]
    assert len(boxes) == len(expected) > 20
    order = np.argsort(-scores, kind="stable")
    np.testing.assert_allclose(scores[order], expected.scores.numpy(), atol=1e-4)
    np.testing.assert_allclose(boxes[order], expected.pred_boxes.tensor.numpy(), atol=0.01)
    assert boxes[:, 2].max() <= 243 and boxes[:, 3].max() <= 181

    # demo.py --onnx: the same detections, written as the config route writes them.
    cv2.imwrite(str(tmp_path / "photo.png"), bgr)
    demo = [sys.executable, "demo.py", "--onnx", path, "--input", str(tmp_path / "photo.png"),
            "--output", str(tmp_path / "out"), "--confidence-threshold", "0"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run(demo, cwd=root, check=True, capture_output=True)
    written = json.loads((tmp_path / "out" / "photo.json").read_text())
    assert len(written) == len(boxes)


def test_runtime_imports_neither_torch_nor_detectron2():
    code = "import sys, srn_d2.deploy.onnx_runtime; print('torch' in sys.modules, 'detectron2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["TEST.AUG.ENABLED", "True"], "TEST.AUG.ENABLED.*multi-scale test"),
        (["MODEL.META_ARCHITECTURE", "GeneralizedRCNN"], "MODEL.META_ARCHITECTURE.*SRN"),
    ],
)
def test_a_config_that_cannot_be_exported_says_why(tmp_path, capsys, overrides, message):
    assert main(["--config-file", DEFAULT_CONFIG, "--output", str(tmp_path), "--allow-random-weights", *overrides]) == 2
    assert re.search(message, capsys.readouterr().err)
