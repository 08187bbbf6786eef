"""ONNX and TorchScript export: the exported graph gives the PyTorch model's detections on
any image size, and the ONNX runtime class and the demo run it without Detectron2's model."""

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
from srn_d2.deploy.export import (
    FORMATS,
    ExportError,
    _Borders,
    _compare,
    batched_runner,
    export,
    exported_file,
    exported_runner,
    verify,
    verify_batched,
)
from srn_d2.deploy.onnx_runtime import pad_images
from srn_d2.engine import FacePredictor
from srn_d2.tools.export import main
from srn_testing import build_tiny_srn, onnx_demo_detections, tiny_srn_cfg

# Odd and non-square sides; 41 x 57 leaves P4 below 120 cells, where the official
# config drops the score floor (a choice the traced graph must keep per size).
SIZES = [(160, 128), (97, 131), (41, 57), (300, 200)]


@pytest.fixture(scope="module")
def official(tmp_path_factory, converted_released):
    folder = tmp_path_factory.mktemp("export")
    _, weights = converted_released
    cfg = setup_cfg(DEFAULT_CONFIG, ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"])
    model = build_model(cfg).eval()
    load_inference_weights(model, weights)
    return cfg, model, folder


def _image(height, width, seed):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 4 + 2, width // 4 + 2, 3)).astype(np.uint8)
    return np.ascontiguousarray(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC))


@pytest.mark.slow
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


@pytest.mark.slow
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
    assert len(onnx_demo_detections(path, bgr, tmp_path)) == len(boxes)


def test_runtime_imports_neither_torch_nor_detectron2():
    code = "import sys, srn_d2.deploy.onnx_runtime; print('torch' in sys.modules, 'detectron2' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["TEST.AUG.ENABLED", "True"], "TEST.AUG.ENABLED.*multi-scale test"),
        (["MODEL.META_ARCHITECTURE", "GeneralizedRCNN"], "MODEL.META_ARCHITECTURE.*SRN"),
    ],
)
def test_a_config_that_cannot_be_exported_says_why(tmp_path, capsys, overrides, message):
    assert (
        main(
            [
                "--config-file",
                DEFAULT_CONFIG,
                "--output",
                str(tmp_path),
                "--allow-random-weights",
                *overrides,
            ]
        )
        == 2
    )
    assert re.search(message, capsys.readouterr().err)


# ------------------------------------------------------------------ the batched export


def _chw(bgr):
    return np.ascontiguousarray(bgr.transpose(2, 0, 1), dtype=np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("export_format", FORMATS)
def test_batched_export_of_same_size_images_equals_the_one_image_model(official, export_format):
    cfg, model, folder = official
    path = export(cfg, export_format, str(folder / f"batched_{export_format}"), batched=True)
    assert os.path.basename(path) == exported_file(export_format, batched=True)
    run_batch = batched_runner(path, export_format)
    for height, width in ((97, 131), (41, 57)):
        images = [_chw(_image(height, width, seed)) for seed in (1, 2, 3)]
        got = run_batch(images)
        for image, detections in zip(images, got):
            report = _compare_with_model(model, image, detections)
            assert (
                report["detections"] > 5
                and report["box_diff_px"] <= 0.01
                and report["score_diff"] <= 1e-4
            )


def _compare_with_model(model, image, detections):
    from srn_d2.deploy.export import _compare

    with torch.no_grad():
        instances = model([{"image": torch.from_numpy(image)}])[0]["instances"]
    expected = (
        instances.pred_boxes.tensor.numpy(),
        instances.scores.numpy(),
        instances.pred_classes.numpy(),
    )
    return _compare(expected, detections, image.shape[1:])


@pytest.mark.slow
def test_a_padded_batch_keeps_each_image_to_itself(official):
    """Three sizes in one padded call: the largest, which nothing pads, gets its own detections;
    the others' detections stay inside them; the export equals the same batch in PyTorch."""
    cfg, model, folder = official
    path = export(cfg, "onnx", str(folder / "batched_padded"), batched=True)
    images = [torch.from_numpy(_chw(_image(h, w, h))) for h, w in ((120, 150), (41, 57), (97, 131))]
    report = verify_batched(model, batched_runner(path, "onnx"), images)
    assert report["image 0 alone"]["detections"] > 20
    assert min(report[f"image {i}"]["detections"] for i in range(3)) > 0
    boxes, scores, classes, batch_index = exported_runner(path, "onnx")(
        *pad_images([i.numpy() for i in images])
    )
    # Grouped by image, each image's best first.
    assert set(batch_index.tolist()) == {0, 1, 2} and np.all(np.diff(batch_index) >= 0)
    for index, image in enumerate(images):
        assert np.all(np.diff(scores[batch_index == index]) <= 0)
        mine = boxes[batch_index == index]
        assert (
            mine.min() >= 0
            and np.all(mine[:, 2] <= image.shape[2])
            and np.all(mine[:, 3] <= image.shape[1])
        )


def _val_images(datasets, count):
    from srn_d2.data.mini_faces import mini_faces_split_paths

    image_root = mini_faces_split_paths(os.path.join(str(datasets), "mini_faces"), "val")[0]
    files = sorted(
        os.path.join(folder, name) for folder, _, names in os.walk(image_root) for name in names
    )
    return [cv2.imread(f) for f in files[:count]]


# The first test to ask for trained_tiny trains it (about a minute on 2 cores).
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_onnx_face_detector_runs_a_list_as_one_by_one(trained_tiny, tmp_path):
    """A list of three sizes and a blank image: the batched export (one call per size, the
    default) gives each image the one-image export's detections; pad=True one call for all."""
    from srn_d2.deploy.onnx_runtime import ONNXFaceDetector

    cfg, datasets = trained_tiny
    blank = np.full((64, 80, 3), 128, np.uint8)
    # The score threshold at the blank image's best score: nothing on it passes, faces do.
    _, blank_scores = ONNXFaceDetector(export(cfg, "onnx", str(tmp_path / "probe")))(blank)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.SRN.SCORE_THRESH_TEST = float(
        blank_scores.max(initial=cfg.MODEL.SRN.SCORE_THRESH_TEST)
    )
    one = ONNXFaceDetector(export(cfg, "onnx", str(tmp_path)))
    batched = ONNXFaceDetector(export(cfg, "onnx", str(tmp_path), batched=True))
    assert (one.batched, batched.batched) == (False, True)
    faces = _val_images(datasets, 3)
    images = [faces[0], blank, faces[1][:-37, :-11], faces[2], faces[0][::-1]]
    assert len({image.shape for image in images}) == 4
    expected = [one(image) for image in images]
    assert len(expected[1][0]) == 0 and min(len(scores) for _, scores in expected[2:]) > 5
    for detector in (one, batched):
        for (boxes, scores), (want_boxes, want_scores) in zip(detector(images), expected):
            assert len(boxes) == len(want_boxes)
            np.testing.assert_allclose(np.sort(scores), np.sort(want_scores), atol=1e-4)
            np.testing.assert_allclose(
                boxes[np.argsort(scores)], want_boxes[np.argsort(want_scores)], atol=0.01
            )
    padded = batched(images, pad=True)
    assert len(padded) == 5 and all(b.shape[1:] == (4,) and len(b) == len(s) for b, s in padded)
    for (boxes, _), image in zip(padded, images):
        assert np.all(boxes[:, 2] <= image.shape[1]) and np.all(boxes[:, 3] <= image.shape[0])
    assert batched(images[0])[0].shape == expected[0][0].shape


@pytest.mark.parametrize(
    "bad, message",
    [
        ("not a list", "expected an H x W x 3 uint8 BGR image, got None str"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)], "image 1 of 2: "),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)], "image 1 of 2: "),
    ],
)
def test_onnx_face_detector_names_the_bad_image_of_a_list(tmp_path, bad, message):
    from srn_d2.deploy.onnx_runtime import ONNXFaceDetector

    cfg = tiny_srn_cfg()
    model = build_tiny_srn(cfg).eval()
    torch.save({"model": model.state_dict()}, tmp_path / "tiny.pth")
    cfg.MODEL.WEIGHTS = str(tmp_path / "tiny.pth")
    detector = ONNXFaceDetector(export(cfg, "onnx", str(tmp_path), batched=True))
    with pytest.raises(ValueError, match=message):
        detector(bad)


def test_the_batched_export_takes_srn_only(tmp_path, capsys):
    from srn_d2 import model_zoo

    config = model_zoo.get_config_file("RetinaNet_mini.yaml")
    assert (
        main(
            [
                "--config-file",
                config,
                "--output",
                str(tmp_path),
                "--batch",
                "--allow-random-weights",
            ]
        )
        == 2
    )
    assert (
        "MODEL.META_ARCHITECTURE = 'RetinaNet': the batched export (--batch) takes SRN models"
        in capsys.readouterr().err
    )
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------ the export's own check


def test_a_config_that_trains_on_cuda_exports_on_the_cpu(tmp_path, tiny_model):
    """Detectron2's default MODEL.DEVICE is "cuda": the export traces and verifies on the CPU
    whether or not this machine has a GPU, and the file runs on the CPU."""
    config_file, weights = tiny_model
    cfg = setup_cfg(config_file, ["MODEL.WEIGHTS", weights])
    cfg.defrost()
    cfg.MODEL.DEVICE = "cuda"  # as a config comes to export() on a GPU machine
    path = export(cfg, "torchscript", str(tmp_path))
    boxes, scores, classes = exported_runner(path, "torchscript")(
        np.zeros((3, 64, 80), dtype=np.float32)
    )
    assert boxes.shape[1] == 4 and len(scores) == len(classes)
    assert cfg.MODEL.DEVICE == "cuda"  # the caller's config is left as it was


def _detections(boxes, scores):
    return (
        np.array(boxes, dtype=np.float32).reshape(-1, 4),
        np.array(scores, dtype=np.float32),
        np.zeros(len(scores), dtype=np.int64),
    )


A, B = [10.0, 10.0, 50.0, 60.0], [12.0, 10.0, 52.0, 60.0]  # IoU 0.9: NMS keeps one of the two
FAR, FARTHER = [100.0, 100.0, 140.0, 150.0], [200.0, 10.0, 230.0, 50.0]
# PyTorch's candidates before NMS: A and B tied, as each test's detections come from them.
CANDIDATES = _detections([A, B, FAR, FARTHER, [0, 0, 5, 5]], [0.7, 0.7, 0.6, 0.3, 0.29998])[:2]
BORDERS = _Borders(score_thresh=0.05, nms_thresh=0.5, max_detections=3, candidates=CANDIDATES)


@pytest.mark.parametrize(
    "expected, got",
    [
        # Tied scores: PyTorch's NMS kept A, the export's B.
        (_detections([A, FAR], [0.7, 0.6]), _detections([B, FAR], [0.70000005, 0.6])),
        # A candidate at the score threshold, kept on one side only.
        (_detections([FAR, A], [0.6, 0.05003]), _detections([FAR], [0.6])),
        # At the cap of 3, the lowest scores cut differently.
        (
            _detections([FAR, A, FARTHER], [0.9, 0.3, 0.29999]),
            _detections([FAR, A, [0, 0, 5, 5]], [0.9, 0.3, 0.29998]),
        ),
        # Order does not matter; numbers within tolerance do not either.
        (
            _detections([A, FAR], [0.7, 0.6]),
            _detections([[10.004, 10, 50, 60], FAR][::-1], [0.70004, 0.6][::-1]),
        ),
    ],
    ids=["nms_tie", "score_threshold", "cap", "order"],
)
def test_the_check_accepts_what_the_post_processing_may_decide_either_way(expected, got):
    report = _compare(expected, got, (64, 64), BORDERS)
    assert report["detections"] == len(expected[0])


@pytest.mark.parametrize(
    "expected, got, message",
    [
        (
            _detections([A, FAR], [0.7, 0.6]),
            _detections([A, [101.0, 100, 141, 150]], [0.7, 0.6]),
            "no counterpart",
        ),
        (_detections([A, FAR], [0.7, 0.6]), _detections([A, FAR], [0.7, 0.61]), "no counterpart"),
        (_detections([A, FAR], [0.7, 0.6]), _detections([A], [0.7]), "no counterpart"),
        # Moved boxes, each "tied" with its twin, which PyTorch's candidates do not hold.
        (
            _detections([A, FAR, FARTHER], [0.7, 0.6, 0.5]),
            _detections([B, [102.0, 100, 142, 150], [202.0, 10, 232, 50]], [0.7, 0.6, 0.5]),
            "no counterpart",
        ),
    ],
    ids=["moved_box", "other_score", "missing", "all_moved"],
)
def test_the_check_refuses_a_real_difference(expected, got, message):
    with pytest.raises(ExportError, match=message):
        _compare(expected, got, (64, 64), BORDERS)


def test_without_candidates_ties_explain_at_most_a_quarter_of_the_detections():
    expected = _detections([A, FAR, FARTHER], [0.7, 0.6, 0.5])
    moved = _detections([B, [102.0, 100, 142, 150], [202.0, 10, 232, 50]], [0.7, 0.6, 0.5])
    with pytest.raises(ExportError, match="more than NMS"):
        _compare(expected, moved, (64, 64), BORDERS._replace(candidates=None))
    one_tie = _detections([B, FAR, FARTHER], [0.7, 0.6, 0.5])
    assert (
        _compare(expected, one_tie, (64, 64), BORDERS._replace(candidates=None))[
            "decided_otherwise"
        ]
        == 2
    )
