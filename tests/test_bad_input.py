"""Hostile and careless input: nothing written outside its folder, no code run from
weights, nothing decoded, trained on or scored silently wrong.

Each test names the failure it guards against; all of them failed before the
guards existed.
"""

import logging
import os
import pathlib
import pickle

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image as detectron2_read_image
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from srn_d2.checkpoint import (
    RandomWeightsError,
    SafeCheckpointer,
    UnreadableCheckpointError,
    UnsafeCheckpointError,
    load_inference_weights,
)
from srn_d2.data import load_fddb, load_wider_face, load_wider_face_test_list
from srn_d2.data.image_io import read_image
from srn_d2.evaluation import WiderFaceEvaluator, load_widerface_gt_mat, write_widerface_predictions
from srn_d2.tools.evaluate_fddb import main as fddb_cli
from srn_d2.modeling import SRNWithTTA
from srn_d2.tools.detect import main as demo_main
from srn_testing import build_tiny_srn, random_image, srn_cfg, tiny_srn_cfg

FACE = "1 2 3 4 0 0 0 0 0 0\n"


def _write(path, text, mode="w"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


# ------------------------------------------------------------ 1. writes outside the output folder


@pytest.mark.parametrize(
    "image_path", ["../../victim/ev/photo.jpg", "/abs/ev/photo.jpg", "ev/../../photo.jpg"]
)
def test_annotation_image_paths_that_leave_the_image_folder_are_refused(tmp_path, image_path):
    gt = _write(tmp_path / "gt.txt", f"ok/a.jpg\n1\n{FACE}{image_path}\n1\n{FACE}")
    with pytest.raises(ValueError, match=rf"{gt}:4: image path .*climbs out"):
        load_wider_face(gt, str(tmp_path / "images"))
    test_list = _write(tmp_path / "list.txt", f"ok/a.jpg\n{image_path}\n")
    with pytest.raises(ValueError, match=rf"{test_list}:2:"):
        load_wider_face_test_list(test_list, str(tmp_path / "images"))
    fold = _write(tmp_path / "fold.txt", f"{image_path[:-4]}\n1\n20 10 0 50 60 1\n")
    with pytest.raises(ValueError, match=rf"{fold}:1:"):
        load_fddb([fold], str(tmp_path / "images"))


def test_evaluation_never_writes_outside_its_folder(tmp_path):
    victim = tmp_path / "victim" / "ev" / "photo.txt"
    victim.parent.mkdir(parents=True)
    victim.write_text("precious")
    out = tmp_path / "out" / "inference"
    for image_id in ["../../../victim/ev/photo", str(tmp_path / "victim" / "ev" / "photo")]:
        with pytest.raises(ValueError, match="outside"):
            write_widerface_predictions(str(out), {image_id: np.array([[1, 2, 3, 4, 0.5]])})
    # A link inside the folder that points out of it is refused too.
    (out / "ev").parent.mkdir(parents=True, exist_ok=True)
    os.symlink(victim.parent, out / "ev")
    with pytest.raises(ValueError, match="outside"):
        write_widerface_predictions(str(out), {"ev/photo": np.array([[1, 2, 3, 4, 0.5]])})
    assert victim.read_text() == "precious"


def test_evaluator_refuses_an_image_id_that_leaves_its_folder(tmp_path):
    name = "bad_input_escaping_ids"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(thing_classes=["face"], difficulty_by_size=(50, 20))
    evaluator = WiderFaceEvaluator(name, str(tmp_path / "out"), distributed=False)
    instances = Instances(
        (10, 10),
        pred_boxes=Boxes(torch.tensor([[1.0, 1, 5, 5]])),
        scores=torch.tensor([0.5]),
        pred_classes=torch.zeros(1, dtype=torch.int64),
    )
    evaluator.process([{"image_id": "../../escaped"}], [{"instances": instances}])
    with pytest.raises(ValueError, match="escaped"):
        evaluator.evaluate()
    assert not (tmp_path / "escaped.txt").exists()


# ------------------------------------------------------------ 2. code execution from weights


class _Payload:
    """Unpickling this touches a marker file: what a crafted checkpoint could do with os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _evil_pickle(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"x": _Payload(str(marker))}, "__author__": "x"}))
    return str(path), marker


def test_detectron2_runs_pickled_code_and_srn_d2_does_not(tmp_path):
    path, marker = _evil_pickle(tmp_path)
    model = build_tiny_srn()
    with pytest.raises(UnsafeCheckpointError, match=r"evil.pkl: refusing to unpickle pathlib"):
        SafeCheckpointer(model).load(path)
    assert not marker.exists()
    # What the guard is for: Detectron2's own checkpointer runs the payload.
    with pytest.raises(Exception):
        DetectionCheckpointer(model).load(path)
    assert marker.exists()


def test_pth_with_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": _Payload(str(marker))}}, path)
    with pytest.raises(UnreadableCheckpointError, match="evil.pth"):
        SafeCheckpointer(build_tiny_srn()).load(str(path))
    assert not marker.exists()


def test_weight_pickles_of_arrays_still_load(tmp_path):
    model = build_tiny_srn(seed=1)
    state = {k: v.numpy() for k, v in build_tiny_srn(seed=2).state_dict().items()}
    zoo = tmp_path / "zoo.pkl"
    zoo.write_bytes(
        pickle.dumps(
            {"model": state, "__author__": "test", "matching_heuristics": False}, protocol=2
        )
    )
    load_inference_weights(model, str(zoo))
    assert all(torch.equal(model.state_dict()[k], torch.from_numpy(v)) for k, v in state.items())
    # Detectron1 / Caffe2 layout: a bare dict of arrays (numpy's protocol-5 pickles included).
    caffe2 = tmp_path / "caffe2.pkl"
    caffe2.write_bytes(
        pickle.dumps({"blobs": {"conv1_w": np.zeros((2, 2), np.float32)}}, protocol=5)
    )
    assert SafeCheckpointer(model)._load_file(str(caffe2))["model"]["conv1_w"].shape == (2, 2)


@pytest.mark.slow
def test_trainer_loads_weights_through_the_safe_checkpointer(tmp_path, monkeypatch):
    from srn_d2.engine import SRNTrainer

    monkeypatch.setenv("SRN_DATASETS", str(tmp_path / "datasets"))
    path, marker = _evil_pickle(tmp_path)
    cfg = srn_cfg("SRN_mini.yaml")
    cfg.merge_from_list(
        ["MODEL.WEIGHTS", path, "OUTPUT_DIR", str(tmp_path / "out"), "DATALOADER.NUM_WORKERS", "0"]
    )
    trainer = SRNTrainer(cfg)
    with pytest.raises(UnsafeCheckpointError):
        trainer.resume_or_load(resume=False)
    assert not marker.exists()


# ------------------------------------------------------------ 3. 16-bit images


def test_16_bit_grayscale_png_is_scaled_to_8_bits(tmp_path):
    values = np.linspace(0, 65535, 40 * 50).reshape(40, 50).astype(np.uint16)
    path = str(tmp_path / "deep.png")
    cv2.imwrite(path, values)
    expected = np.rint(values / 257.0).astype(np.uint8)
    for image_format in ("RGB", "BGR"):
        image = read_image(path, image_format)
        assert image.shape == (40, 50, 3) and image.dtype == np.uint8
        for channel in range(3):
            np.testing.assert_array_equal(image[:, :, channel], expected)
    # Detectron2's read_image clips it to a white image.
    assert (detectron2_read_image(path, "RGB") == 255).mean() > 0.99


# ------------------------------------------------------------ 4. non-finite predictions (FDDB command)


def _fddb_cli(tmp_path, detections_text):
    gt_dir = tmp_path / "folds"
    _write(gt_dir / "FDDB-fold-01-ellipseList.txt", "2002/08/11/big/img_1\n1\n10 10 0 50 50 1\n")
    pred = _write(tmp_path / "dets.txt", detections_text)
    return fddb_cli(["--pred", pred, "--gt-dir", str(gt_dir)]), pred


def test_fddb_command_refuses_an_empty_detection_file(tmp_path, capsys):
    code, pred = _fddb_cli(tmp_path, "")
    assert code == 2 and f"{pred}: no detections" in capsys.readouterr().err


def test_fddb_command_refuses_nan_detections(tmp_path, capsys):
    code, pred = _fddb_cli(tmp_path, "2002/08/11/big/img_1\n1\n40 40 nan 20 0.9\n")
    assert code == 2 and f"{pred}, line 3: not finite" in capsys.readouterr().err


def test_fddb_evaluation_refuses_inf_scores_in_memory(tmp_path):
    from srn_d2.evaluation import evaluate_fddb

    ground_truth = {"img": (np.array([[10.0, 10, 0, 50, 50]]), None)}
    with pytest.raises(ValueError, match="detections of img"):
        evaluate_fddb({"img": np.array([[40, 40, 20, 20, np.inf]])}, ground_truth)


# ------------------------------------------------------------ 5. non-finite annotation boxes


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_non_finite_annotation_boxes_are_an_error(tmp_path, value):
    gt = _write(tmp_path / "gt.txt", f"a/a.jpg\n2\n{FACE}1 2 {value} 4 0 0 0 0 0 0\n")
    with pytest.raises(ValueError, match=rf"{gt}:4: non-finite"):
        load_wider_face(gt, "/images")
    fold = _write(tmp_path / "fold.txt", f"a\n1\n20 10 0 {value} 60 1\n")
    with pytest.raises(ValueError, match=rf"{fold}:3: non-finite"):
        load_fddb([fold], "/images")


# ------------------------------------------------------------ 6. inference with random weights


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_demo")
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.SCORE_THRESH_TEST = 0.0
    config_file = root / "tiny.yaml"
    config_file.write_text(cfg.dump())
    DetectionCheckpointer(build_tiny_srn(cfg), save_dir=str(root)).save("tiny")
    return str(config_file), str(root / "tiny.pth")


def _demo(tmp_path, config_file, inputs, *extra):
    return demo_main(
        [
            "--config-file",
            config_file,
            "--input",
            *inputs,
            "--output",
            str(tmp_path / "out"),
            *extra,
        ]
    )


def _image_file(tmp_path, name="face.png"):
    path = tmp_path / name
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8))
    return str(path)


def test_demo_refuses_to_run_a_random_model(tmp_path, tiny_config, capsys):
    config_file, _ = tiny_config
    assert _demo(tmp_path, config_file, [_image_file(tmp_path)]) == 2
    assert "MODEL.WEIGHTS is empty" in capsys.readouterr().err
    assert not (tmp_path / "out" / "face.txt").exists()
    assert _demo(tmp_path, config_file, [_image_file(tmp_path)], "--allow-random-weights") == 0
    assert (tmp_path / "out" / "face.txt").exists()


def test_weights_of_another_model_are_refused_for_inference(tmp_path):
    other = tiny_srn_cfg()
    other.MODEL.SRN.OUT_CHANNELS = 16
    DetectionCheckpointer(build_tiny_srn(other), save_dir=str(tmp_path)).save("other")
    with pytest.raises(RandomWeightsError, match=r"leaves \d+ of the model's parameters random"):
        load_inference_weights(build_tiny_srn(), str(tmp_path / "other.pth"))
    load_inference_weights(build_tiny_srn(), str(tmp_path / "other.pth"), allow_random=True)


# ------------------------------------------------------------ 7. config values


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("MODEL.SRN.STC_MIN_FACE_PROB", -0.5, "must lie in"),
        ("MODEL.SRN.STC_MIN_FACE_PROB", 1.5, "must lie in"),
        ("MODEL.SRN.MATCHER_MAX_PAIRS", 0, "must be positive"),
        ("MODEL.SRN.STC_LEVELS", ["p2", "p3", "p2"], r"names \['p2'\] more than once"),
        ("MODEL.SRN.NUM_CLASSES", 0, "at least one class"),
        ("MODEL.SRN.STEP1_IOU_THRESHOLDS", [0.7, 0.3], "first <= second"),
        ("MODEL.SRN.STEP2_IOU_THRESHOLDS", [0.4, 1.5], "first <= second <= 1"),
        ("MODEL.SRN.NECK_NORM", "XN", "not a normalization"),
        ("MODEL.SRN.HEAD_NORM", "groupnorm", "not a normalization"),
        ("MODEL.SRN.SCORE_THRESH_TEST", 2.0, "must lie in"),
    ],
)
def test_bad_config_values_name_their_key(key, value, message):
    cfg = tiny_srn_cfg()
    cfg.merge_from_list([key, str(value)])
    with pytest.raises(ValueError, match=rf"{key}.*{message}"):
        build_model(cfg)


def test_bad_mini_resnet_norm_names_its_key():
    cfg = srn_cfg("SRN_mini.yaml")
    cfg.MODEL.MINI_RESNET.NORM = "XN"
    with pytest.raises(ValueError, match="MODEL.MINI_RESNET.NORM"):
        build_model(cfg)


# ------------------------------------------------------------ 8. smaller silent cases


def test_demo_refuses_inputs_that_would_write_the_same_outputs(tmp_path, tiny_config, capsys):
    config_file, weights = tiny_config
    inputs = [_image_file(tmp_path, "x.jpg"), _image_file(tmp_path, "x.png")]
    assert _demo(tmp_path, config_file, inputs, "--opts", "MODEL.WEIGHTS", weights) == 2
    error = capsys.readouterr().err
    assert "x.jpg" in error and "x.png" in error and "x.txt" in error
    assert not (tmp_path / "out").exists()


def test_a_face_after_a_count_of_zero_is_an_error(tmp_path):
    gt = _write(tmp_path / "gt.txt", f"a/a.jpg\n0\n{FACE}b/b.jpg\n1\n{FACE}")
    with pytest.raises(ValueError, match=rf"{gt}:3: a record follows a count of 0"):
        load_wider_face(gt, "/images")


def test_byte_order_mark_is_not_part_of_the_first_image_id(tmp_path):
    gt = _write(
        tmp_path / "gt.txt", ("\ufeff" + f"0--Parade/a.jpg\n1\n{FACE}").encode("utf-8"), "wb"
    )
    assert load_wider_face(gt, "/images")[0]["image_id"] == "0--Parade/a"


def test_non_utf8_annotations_name_the_file_and_line(tmp_path):
    gt = _write(
        tmp_path / "gt.txt", f"a/a.jpg\n1\n{FACE}caf\xe9/b.jpg\n0\n".encode("latin-1"), "wb"
    )
    with pytest.raises(ValueError, match=rf"{gt}:4: not UTF-8"):
        load_wider_face(gt, "/images")


@pytest.mark.parametrize(
    "content", [b"", b"MATLAB 5.0 MAT-file, truncated" + b"\0" * 100, b"not a mat file"]
)
def test_corrupt_mat_ground_truth_names_the_file(tmp_path, content):
    (tmp_path / "wider_face_val.mat").write_bytes(content)
    with pytest.raises(ValueError, match="wider_face_val.mat"):
        load_widerface_gt_mat(str(tmp_path))


@pytest.mark.slow
def test_multi_scale_test_of_a_one_pixel_image(tmp_path):
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.SCORE_THRESH_TEST = 0.0
    model = build_tiny_srn(cfg).eval()
    for height, width in [(1, 1), (1, 7), (2, 3)]:
        result = SRNWithTTA(cfg, model)([{"image": random_image(height, width).to(torch.uint8)}])[
            0
        ]["instances"]
        assert result.image_size == (height, width)
        boxes = result.pred_boxes.tensor
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()


def test_resume_falls_back_from_a_damaged_last_checkpoint(tmp_path, caplog):
    model = build_tiny_srn(seed=1)
    checkpointer = SafeCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000009")
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    os.utime(tmp_path / "model_0000009.pth", (1, 1))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    checkpointer.save("model_0000019")
    # Killed while writing: the last checkpoint is cut short.
    data = (tmp_path / "model_0000019.pth").read_bytes()
    (tmp_path / "model_0000019.pth").write_bytes(data[: len(data) // 2])

    restored = build_tiny_srn(seed=2)
    with caplog.at_level(logging.WARNING, logger="srn_d2.checkpoint"):
        SafeCheckpointer(restored, str(tmp_path)).resume_or_load("", resume=True)
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in expected.items())
    assert any(
        "model_0000019.pth is damaged" in r.getMessage() and "model_0000009.pth" in r.getMessage()
        for r in caplog.records
    )


def test_resume_with_no_readable_checkpoint_says_so(tmp_path):
    (tmp_path / "model_final.pth").write_bytes(b"garbage")
    (tmp_path / "last_checkpoint").write_text("model_final.pth")
    with pytest.raises(UnreadableCheckpointError, match="no readable checkpoint"):
        SafeCheckpointer(build_tiny_srn(), str(tmp_path)).resume_or_load("", resume=True)


def test_config_files_cannot_run_code(tmp_path):
    from srn_d2.engine import setup_cfg
    from srn_d2.errors import ConfigValueError

    marker = tmp_path / "code_ran"
    config = tmp_path / "evil.yaml"
    config.write_text(f'SEED: !!python/object/apply:os.system ["touch {marker}"]\n')
    # Detectron2 falls back to yaml.unsafe_load for such a file unless told not to.
    with pytest.raises(ConfigValueError, match="evil.yaml, line 1"):
        setup_cfg(str(config))
    assert not marker.exists()
