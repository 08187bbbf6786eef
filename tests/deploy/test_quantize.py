"""int8 export: calibrated on a registered dataset through the model's own preprocessing,
recorded in the model's metadata, run unchanged by ONNXFaceDetector (one image, a list, the
batched graph, an image without candidates), its detections close to fp32's on a trained
model, and refused clearly without calibration data. The accuracy cost on mini_faces val is
measured by benchmarks/benchmark_deploy_accuracy.py."""

import logging
import os

import numpy as np
import onnx
import pytest

from srn_d2.deploy.onnx_runtime import ONNXFaceDetector
from srn_d2.deploy.quantize import compare_precisions, int8_path, quantize_int8
from srn_d2.tools.export import main as export_cli


def _export(config_file, weights, output, *extra):
    return export_cli(
        ["--config-file", config_file, "--output", str(output), *extra, "MODEL.WEIGHTS", weights]
    )


# The decoding, the STC threshold and NMS: fp32 in every scope.
DECODING = {"Sigmoid", "Exp", "TopK", "NonMaxSuppression", "GreaterOrEqual", "Greater"}


def _int8_neighbours(path):
    """(operator types next to int8 tensors: fed by a DequantizeLinear or feeding a QuantizeLinear,
    the number of additions and concatenations of int8 inputs only, every operator type of the
    graph's top level)."""
    graph = onnx.load(path).graph
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    to_quantize = {node.input[0] for node in graph.node if node.op_type == "QuantizeLinear"}
    neighbours = {
        node.op_type
        for node in graph.node
        if set(node.input) & dequantized or set(node.output) & to_quantize
    }
    # Additions and concatenations computed in int8: every input is dequantized or a constant.
    constants = {tensor.name for tensor in graph.initializer}
    int8_merges = sum(
        node.op_type in ("Add", "Concat")
        and bool(set(node.input) & dequantized)
        and set(node.input) <= dequantized | constants
        for node in graph.node
    )
    return neighbours, int8_merges, {node.op_type for node in graph.node}


@pytest.mark.slow
@pytest.mark.parametrize("batch", [False, True])
def test_int8_export_runs_is_recorded_and_keeps_the_decoding_fp32(
    tiny_model, tmp_path, monkeypatch, caplog, batch
):
    monkeypatch.setenv("SRN_DATASETS", str(tmp_path / "datasets"))
    caplog.set_level(logging.INFO, logger="srn_d2.export")
    config_file, weights = tiny_model
    assert (
        _export(
            config_file,
            weights,
            tmp_path / "out",
            "--quantize",
            "int8",
            *(["--batch"] if batch else []),
            "--calibration-dataset",
            "mini_faces_train",
            "--calibration-images",
            "3",
        )
        == 0
    )
    assert "int8 against fp32 on 3 calibration images" in caplog.text
    name = "model_batched" if batch else "model"
    fp32 = ONNXFaceDetector(str(tmp_path / "out" / f"{name}.onnx"))
    int8 = ONNXFaceDetector(str(tmp_path / "out" / f"{name}_int8.onnx"))
    assert (fp32.precision, int8.precision, int8.batched) == ("fp32", "int8", batch)
    # Untrained, no anchor scores 0.05: the decoding runs on empty tensors, which the
    # optimized int8 graph once failed on (srn_d2.modeling.box_regression).
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (61, 83, 3), dtype=np.uint8),
        rng.integers(0, 256, (40, 97, 3), dtype=np.uint8),
    ]
    for boxes, scores in int8(images, pad=batch):
        assert boxes.shape == (0, 4) and scores.shape == (0,)
    # The convolutions take int8 inputs; the decoding and NMS stay fp32, away from any int8 tensor.
    neighbours, _, operators = _int8_neighbours(str(tmp_path / "out" / f"{name}_int8.onnx"))
    assert "Conv" in neighbours and not neighbours & DECODING
    # (The one-image graph's NMS sits in a subgraph of torchvision's scripted batched_nms.)
    assert DECODING & operators >= {"Sigmoid", "Exp", "TopK"}


@pytest.mark.slow
def test_the_network_scope_quantizes_more_than_the_convolutions(tiny_model, tmp_path):
    from srn_d2.deploy.export import export
    from srn_d2.engine import setup_cfg

    config_file, weights = tiny_model
    path = export(setup_cfg(config_file, ["MODEL.WEIGHTS", weights]), "onnx", str(tmp_path))
    images = [
        np.random.default_rng(i).integers(0, 256, (3, 64, 80)).astype(np.float32) for i in range(2)
    ]
    quantize_int8(path, images, output_path=str(tmp_path / "conv_int8.onnx"))
    quantize_int8(path, images, scope="network", output_path=str(tmp_path / "network_int8.onnx"))
    _, conv_merges, _ = _int8_neighbours(str(tmp_path / "conv_int8.onnx"))
    neighbours, network_merges, _ = _int8_neighbours(str(tmp_path / "network_int8.onnx"))
    assert conv_merges == 0 and network_merges > 10 and {"Conv", "Add", "Concat"} <= neighbours
    assert not neighbours & DECODING
    with pytest.raises(ValueError, match="scope = 'everything': must be one of"):
        quantize_int8(path, images, scope="everything")


def _largest_int8_weight(path):
    """The largest magnitude among the int8 weights of a quantized graph."""
    from onnx import TensorProto, numpy_helper

    return max(
        int(np.abs(numpy_helper.to_array(t).astype(np.int32)).max())
        for t in onnx.load(path).graph.initializer
        if t.data_type == TensorProto.INT8 and t.dims
    )


@pytest.mark.slow
def test_seven_bit_weights_stay_within_64(tiny_model, tmp_path):
    """Per channel, each output channel's largest weight maps to the end of the range: 127 in
    8 bits, 64 in 7 (onnxruntime's reduce_range), where AVX2's 16-bit sums cannot overflow."""
    from srn_d2.deploy.export import export
    from srn_d2.engine import setup_cfg

    config_file, weights = tiny_model
    path = export(setup_cfg(config_file, ["MODEL.WEIGHTS", weights]), "onnx", str(tmp_path))
    images = [
        np.random.default_rng(i).integers(0, 256, (3, 64, 80)).astype(np.float32) for i in range(2)
    ]
    quantize_int8(path, images, output_path=str(tmp_path / "eight.onnx"))
    quantize_int8(path, images, output_path=str(tmp_path / "seven.onnx"), weight_bits=7)
    assert _largest_int8_weight(str(tmp_path / "eight.onnx")) == 127
    assert _largest_int8_weight(str(tmp_path / "seven.onnx")) == 64
    with pytest.raises(ValueError, match="--int8-weight-bits = 4: must be one of"):
        quantize_int8(path, images, weight_bits=4)


def test_int8_path_sits_beside_its_fp32_model():
    assert int8_path("/a/model.onnx") == "/a/model_int8.onnx"
    assert int8_path("/a/model_batched.onnx") == "/a/model_batched_int8.onnx"


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--quantize", "int8"],
            "--calibration-dataset = None: --quantize int8 needs calibration images",
        ),
        (
            ["--quantize", "int8", "--calibration-dataset", "no_such_faces"],
            "--calibration-dataset = 'no_such_faces': is not a registered dataset",
        ),
        (
            [
                "--quantize",
                "int8",
                "--calibration-dataset",
                "mini_faces_train",
                "--calibration-images",
                "0",
            ],
            "--calibration-images = 0: must be at least 1",
        ),
        (
            [
                "--quantize",
                "int8",
                "--format",
                "torchscript",
                "--calibration-dataset",
                "mini_faces_train",
            ],
            "--format = 'torchscript': --quantize int8 quantizes the ONNX export",
        ),
    ],
)
def test_int8_without_usable_calibration_data_is_refused_before_anything_is_written(
    tiny_model, tmp_path, capsys, extra, message
):
    config_file, weights = tiny_model
    assert _export(config_file, weights, tmp_path / "out", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# The first test to ask for trained_tiny trains it (about a minute on 2 cores).
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_int8_detections_agree_with_fp32_on_a_trained_model(trained_tiny, tmp_path, monkeypatch):
    """The trained tiny SRN, calibrated on 20 train images, run on 10 val images it never saw:
    at least 90% of the fp32 detections scoring >= 0.5 are found again at IoU >= 0.9 with
    scores within 0.2, and the int8 model keeps as many detections within 10%. Scores move up
    to 0.1 on CPUs with AVX-512 VNNI and up to 0.135 on AVX2-only ones, whose int8 kernels
    saturate some 16-bit partial sums (measured on both)."""
    from srn_d2.deploy.export import export
    from srn_d2.deploy.quantize import calibration_images

    cfg, datasets = trained_tiny
    monkeypatch.setenv("SRN_DATASETS", str(datasets))
    path = export(cfg, "onnx", str(tmp_path))
    quantize_int8(path, calibration_images(cfg, "mini_faces_train", 20))
    report = compare_precisions(
        path, int8_path(path), calibration_images(cfg, "mini_faces_val", 10)
    )
    assert report["reference_confident"] >= 50
    assert report["found_again"] >= 0.9 * report["reference_confident"]
    assert report["largest_score_change"] <= 0.2
    assert (
        abs(report["other_detections"] - report["reference_detections"])
        <= 0.1 * report["reference_detections"]
    )


def test_agreement_measures_the_landmark_shift_in_face_sizes():
    """One confident face, found again at IoU 1; one of its points moved by (3, 4) px on a 10 x 10
    box: 5 px, half the face's size. A face under 0.5 is not compared."""
    from srn_d2.deploy.quantize import detection_agreement

    boxes = np.array([[0, 0, 10, 10], [50, 50, 70, 70]], np.float32)
    scores = np.array([0.9, 0.3], np.float32)
    points = np.zeros((2, 5, 2), np.float32)
    moved = points.copy()
    moved[0, 2] += (3, 4)
    moved[1] += 100
    report = detection_agreement([(boxes, scores, points)], [(boxes, scores - 0.05, moved)])
    assert (report["reference_confident"], report["found_again"]) == (1, 1)
    assert report["largest_landmark_shift"] == pytest.approx(0.5)
    assert report["largest_score_change"] == pytest.approx(0.05)
    assert "largest_landmark_shift" not in detection_agreement([(boxes, scores)], [(boxes, scores)])


@pytest.mark.slow
def test_int8_landmark_model_runs_and_reports_its_landmark_shift(tmp_path, monkeypatch, caplog):
    from srn_d2.deploy.export import export
    from srn_d2.deploy.quantize import calibration_images
    from srn_testing import spread_landmark_srn

    monkeypatch.setenv("SRN_DATASETS", str(tmp_path / "datasets"))
    caplog.set_level(logging.INFO, logger="srn_d2.export")
    cfg, _ = spread_landmark_srn(str(tmp_path))
    path = export(cfg, "onnx", str(tmp_path))
    report = quantize_int8(path, calibration_images(cfg, "mini_faces_train", 3))
    assert "landmarks moved by at most" in caplog.text
    assert report["reference_detections"] == 3 * 60 and "largest_landmark_shift" in report
    int8 = ONNXFaceDetector(int8_path(path))
    assert int8.has_landmarks and int8.precision == "int8"
    boxes, scores, landmarks = int8(np.zeros((70, 90, 3), np.uint8))
    assert landmarks.shape == (len(scores), 5, 2) == (60, 5, 2)


INT8 = [
    "--quantize",
    "int8",
    "--calibration-dataset",
    "mini_faces_train",
    "--calibration-images",
    "2",
]


def _export_id(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}["srn_d2.export_id"]


@pytest.mark.slow
def test_the_pair_shares_an_export_id_and_a_mismatch_is_told(
    tiny_model, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("SRN_DATASETS", str(tmp_path / "datasets"))
    config_file, weights = tiny_model
    out = tmp_path / "out"
    assert _export(config_file, weights, out, *INT8) == 0
    first = _export_id(out / "model.onnx")
    assert _export_id(out / "model_int8.onnx") == first and len(first) == 32
    # A later fp32 export alone leaves the twin of the first: loading it says so.
    assert _export(config_file, weights, out) == 0
    assert _export_id(out / "model.onnx") != first
    ONNXFaceDetector(str(out / "model_int8.onnx"))
    assert "come from different exports" in caplog.text


@pytest.mark.slow
def test_a_failure_during_the_int8_step_leaves_both_previous_files(
    tiny_model, tmp_path, monkeypatch, capsys
):
    """The pair changes together or not at all; no partial file or working folder stays behind."""
    import srn_d2.deploy.quantize as quantize

    monkeypatch.setenv("SRN_DATASETS", str(tmp_path / "datasets"))
    config_file, weights = tiny_model
    out = tmp_path / "out"
    assert _export(config_file, weights, out, *INT8) == 0
    before = {name: (out / name).read_bytes() for name in ("model.onnx", "model_int8.onnx")}

    def fail(*args, **kwargs):
        raise MemoryError("killed in the middle of the int8 step")

    monkeypatch.setattr(quantize, "compare_precisions", fail)
    with pytest.raises(MemoryError):
        _export(config_file, weights, out, *INT8)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model_int8.onnx"]


def test_a_link_at_the_int8_path_is_refused_before_the_model_is_replaced(
    tiny_model, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SRN_DATASETS", str(tmp_path / "datasets"))
    config_file, weights = tiny_model
    out, victim = tmp_path / "out", tmp_path / "victim.onnx"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"the previous model")
    victim.write_bytes(b"someone else's file")
    (out / "model_int8.onnx").symlink_to(victim)
    assert _export(config_file, weights, out, *INT8) == 2
    assert "model_int8.onnx: is a link" in capsys.readouterr().err
    assert (
        out / "model.onnx"
    ).read_bytes() == b"the previous model" and victim.read_bytes() == b"someone else's file"


def test_partial_files_of_a_killed_writer_are_removed_and_a_live_ones_kept(tmp_path, caplog):
    """A kill leaves the hidden partial file (or working folder) of its write; the next write of
    the same target removes those whose process is gone."""
    import subprocess
    import sys

    from srn_d2.utils.file_io import write_text

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    (tmp_path / f".model.onnx.{dead}.abc.partial.onnx").write_text("half a model")
    (tmp_path / f".model.onnx.{dead}.def.partial").mkdir()
    live = tmp_path / f".model.onnx.{os.getpid()}.ghi.partial.onnx"
    live.write_text("being written")
    other = tmp_path / f".model_int8.onnx.{dead}.jkl.partial.onnx"
    other.write_text("another target's")
    write_text(str(tmp_path / "model.onnx"), "a model")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model.onnx", live.name, other.name]
    )
    assert f"left by an interrupted write of model.onnx (process {dead})" in caplog.text


def test_calibrating_on_an_evaluation_set_is_warned(mini_faces_root, monkeypatch, caplog):
    from srn_d2.deploy.quantize import calibration_images
    from srn_testing import tiny_srn_cfg

    monkeypatch.setenv("SRN_DATASETS", mini_faces_root)
    cfg = tiny_srn_cfg()
    assert len(calibration_images(cfg, "mini_faces_train", 1)) == 1
    assert "evaluation set" not in caplog.text
    assert len(calibration_images(cfg, "mini_faces_val", 1)) == 1
    assert "--calibration-dataset mini_faces_val is an evaluation set" in caplog.text
