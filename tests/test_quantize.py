"""int8 export: calibrated on a registered dataset through the model's own preprocessing,
recorded in the model's metadata, run unchanged by ONNXFaceDetector; refused clearly without
calibration data. (The accuracy cost on a trained model is measured in the README's table.)"""
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

from srn_d2.tools.export import main as export_cli
from srn_testing import build_tiny_srn, tiny_srn_cfg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_int8")
    cfg = tiny_srn_cfg()
    (root / "tiny.yaml").write_text(cfg.dump())
    DetectionCheckpointer(build_tiny_srn(cfg), save_dir=str(root)).save("tiny")
    return str(root / "tiny.yaml"), str(root / "tiny.pth")


def _export(config_file, weights, output, *extra):
    return export_cli(["--config-file", config_file, "--output", str(output), *extra, "MODEL.WEIGHTS", weights])


def test_int8_export_runs_and_is_recorded(tiny, tmp_path, monkeypatch, caplog):
    import logging

    from srn_d2.deploy.onnx_runtime import ONNXFaceDetector

    monkeypatch.setenv("SRN_DATASETS", str(tmp_path / "datasets"))
    caplog.set_level(logging.INFO, logger="srn_d2.export")
    config_file, weights = tiny
    assert _export(config_file, weights, tmp_path / "out", "--quantize", "int8",
                   "--calibration-dataset", "mini_faces_train", "--calibration-images", "3") == 0
    assert "int8 against fp32 on 3 calibration images" in caplog.text
    fp32, int8 = ONNXFaceDetector(str(tmp_path / "out" / "model.onnx")), ONNXFaceDetector(
        str(tmp_path / "out" / "model_int8.onnx"))
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    image = np.random.default_rng(0).integers(0, 256, (61, 83, 3), dtype=np.uint8)
    boxes, scores = int8(image)
    assert boxes.shape[1:] == (4,) and scores.shape == (len(boxes),)
    # Only the convolutions are quantized: NMS, decoding and the STC threshold stay fp32.
    import onnx

    graph = onnx.load(str(tmp_path / "out" / "model_int8.onnx")).graph
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    fed_by_int8 = {node.op_type for node in graph.node if set(node.input) & dequantized}
    assert fed_by_int8 == {"Conv"}
    assert any(node.op_type == "NonMaxSuppression" for node in graph.node)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--quantize", "int8"], "--calibration-dataset = None: --quantize int8 needs calibration images"),
        (["--quantize", "int8", "--calibration-dataset", "no_such_faces"],
         "--calibration-dataset = 'no_such_faces': is not a registered dataset"),
        (["--quantize", "int8", "--format", "torchscript", "--calibration-dataset", "mini_faces_train"],
         "--format = 'torchscript': --quantize int8 quantizes the ONNX export"),
    ],
)
def test_int8_without_usable_calibration_data_is_refused(tiny, tmp_path, capsys, extra, message):
    config_file, weights = tiny
    assert _export(config_file, weights, tmp_path / "out", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "model_int8.onnx").exists()
