"""Hostile input and faults, second round: each case runs the public entry point (the
command line where users use one) and asserts the exit status, that the message names
the file, line or key at fault, and that nothing was written, changed or lost.

The parsers of user files also get property-based tests: any bytes either parse or
raise ValueError naming the file, never another exception.
"""

import errno
import os
import re
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from srn_d2.checkpoint import SafeCheckpointer, UnreadableCheckpointError, load_inference_weights
from srn_d2.data import load_fddb, load_wider_face, load_wider_face_test_list
from srn_d2.data.retinaface_labels import load_retinaface_labels
from srn_d2.data.image_io import read_image
from srn_d2.data.mini_faces import COMPLETE_MARKER, MARKER_TEXT, MINI_FACES_DIR, ensure_mini_faces
from srn_d2.evaluation.fddb_protocol import evaluate_fddb
from srn_d2.evaluation.prediction_files import read_fddb_detections, read_widerface_prediction_file
from srn_d2.tools.convert_released import main as convert_cli
from srn_d2.tools.detect import main as demo_cli
from srn_d2.tools.evaluate_fddb import main as fddb_cli
from srn_d2.tools.export import main as export_cli
from srn_d2.utils.file_io import atomic_write, write_bytes
from srn_testing import build_tiny_srn, tiny_srn_cfg

WIDER_FACE = "1 2 3 4 0 0 0 0 0 0\n"
FDDB_FACE = "40 30 0.1 100 100 1\n"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _files(folder):
    """Every file under ``folder`` with its bytes: what a refused command must leave as it was."""
    return {
        os.path.relpath(os.path.join(root, name), folder): open(
            os.path.join(root, name), "rb"
        ).read()
        for root, _, names in os.walk(folder)
        for name in names
    }


def _export(config_file, weights, output):
    return export_cli(
        ["--config-file", config_file, "--output", str(output), "MODEL.WEIGHTS", weights]
    )


def _demo(tiny_model, source, out):
    """demo.py's exit status on ``source`` with the tiny model, writing to ``out``."""
    config_file, weights = tiny_model
    argv = ["--config-file", config_file, "--input", source, "--output", str(out)]
    return demo_cli(argv + ["--opts", "MODEL.WEIGHTS", weights])


def _image(path, height=32, width=40):
    cv2.imwrite(
        str(path), np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    )
    return str(path)


def _bomb_png(path, side=40_000):
    """A PNG whose header declares side x side pixels (above PIL's decompression-bomb limit)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return str(path)


# ------------------------------------------------------------------ 3. failures keep the previous file


@pytest.mark.slow
def test_a_failed_export_leaves_the_previous_model_byte_identical(
    tiny_model, tmp_path, monkeypatch, capsys
):
    config_file, weights = tiny_model
    assert _export(config_file, weights, tmp_path) == 0
    before = _files(tmp_path)
    from srn_d2.deploy import export as export_module
    from srn_d2.errors import ExportError

    def differs(*args, **kwargs):
        raise ExportError("(241, 321) px: boxes differ by up to 3.0000 px")

    monkeypatch.setattr(export_module, "verify", differs)
    assert _export(config_file, weights, tmp_path) == 2
    assert "boxes differ" in capsys.readouterr().err
    assert _files(tmp_path) == before


@pytest.mark.parametrize("fail_after", [0, 1, 4096])
def test_a_write_that_fails_halfway_leaves_the_previous_file_and_no_partial_one(
    tmp_path, fail_after
):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the previous, working model")
    with pytest.raises(
        OSError,
        match=r"model.onnx: not written \(the disk is full\); any previous file is unchanged",
    ):
        with atomic_write(str(target), "wb") as f:
            f.write(b"x" * fail_after)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert _files(tmp_path) == {"model.onnx": b"the previous, working model"}


def test_a_full_disk_during_a_checkpoint_keeps_the_last_one(tmp_path, monkeypatch):
    model = build_tiny_srn()
    checkpointer = SafeCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000009")
    before = _files(tmp_path)

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"model_0000019.pth: not written \(the disk is full\)"):
        checkpointer.save("model_0000019")
    assert _files(tmp_path) == before
    assert checkpointer.get_checkpoint_file().endswith("model_0000009.pth")


# ------------------------------------------------------------------ 4. no writer follows a link


def test_export_refuses_a_linked_output_and_leaves_its_target(tiny_model, tmp_path, capsys):
    config_file, weights = tiny_model
    elsewhere = tmp_path / "precious.bin"
    elsewhere.write_bytes(b"someone else's file")
    (tmp_path / "out").mkdir()
    os.symlink(elsewhere, tmp_path / "out" / "model.onnx")
    assert _export(config_file, weights, tmp_path / "out") == 2
    assert "model.onnx: is a link" in capsys.readouterr().err
    assert elsewhere.read_bytes() == b"someone else's file"
    assert os.listdir(tmp_path / "out") == ["model.onnx"]


def test_demo_checks_every_output_before_writing_any(tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "precious.txt"
    elsewhere.write_text("kept")
    os.symlink(elsewhere, out / "face.txt")
    image = _image(tmp_path / "face.png")
    assert _demo(tiny_model, image, out) == 2
    assert "face.txt: is a link" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["face.txt"]  # no face.png drawn before the refusal
    assert elsewhere.read_text() == "kept"


@pytest.mark.parametrize("what", ["file", "folder_is_a_file"])
def test_export_output_that_is_not_a_folder_is_named(tiny_model, tmp_path, capsys, what):
    config_file, weights = tiny_model
    output = tmp_path / "export"
    output.write_bytes(b"a file, not a folder")
    assert _export(config_file, weights, output) == 2
    assert f"{output}: exists and is not a folder" in capsys.readouterr().err
    assert output.read_bytes() == b"a file, not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_export_into_a_read_only_folder_is_named(tiny_model, tmp_path, capsys):
    config_file, weights = tiny_model
    output = tmp_path / "read_only"
    output.mkdir(mode=0o555)
    assert _export(config_file, weights, output) == 2
    assert "read_only: this output folder is not writable" in capsys.readouterr().err


# ------------------------------------------------------------------ 5, 7. the converter


def _released(path, value=0.5):
    torch.save({"state_dict": {"module.conv1.weight": torch.full((64, 3, 7, 7), value)}}, path)
    return str(path)


def test_the_converter_refuses_to_overwrite_its_input(tmp_path, capsys):
    released = _released(tmp_path / "srn.pth")
    os.symlink(released, tmp_path / "link.pth")
    before = _files(tmp_path)
    assert convert_cli([released, released]) == 2
    assert "is the input" in capsys.readouterr().err
    assert convert_cli([released, str(tmp_path / "link.pth")]) == 2
    assert "is the input" in capsys.readouterr().err
    assert convert_cli([released, str(tmp_path / "." / "srn.pth")]) == 2
    assert _files(tmp_path) == before


def test_the_converter_refuses_non_finite_weights_naming_the_tensor(tmp_path, capsys):
    released = _released(tmp_path / "srn.pth", value=float("nan"))
    assert convert_cli([released, str(tmp_path / "new" / "out.pth")]) == 2
    assert "non-finite values (NaN or infinity) in ['conv1.weight']" in capsys.readouterr().err
    assert not (tmp_path / "new" / "out.pth").exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_loading_non_finite_weights_names_the_tensor(tmp_path, value):
    model = build_tiny_srn()
    state = model.state_dict()
    state["head.shared.cls_score.bias"] = torch.full_like(
        state["head.shared.cls_score.bias"], value
    )
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(
        UnreadableCheckpointError,
        match=r"bad.pth: head.shared.cls_score.bias holds NaN or infinity",
    ):
        load_inference_weights(build_tiny_srn(), str(tmp_path / "bad.pth"))


def test_a_missing_weights_file_is_named(tiny_model, tmp_path, capsys):
    config_file, _ = tiny_model
    assert _export(config_file, str(tmp_path / "missing.pth"), tmp_path / "out") == 2
    assert f"checkpoint {tmp_path / 'missing.pth'} not found" in capsys.readouterr().err


def test_resuming_another_models_output_dir_names_the_key(tmp_path):
    other = tiny_srn_cfg()
    other.MODEL.SRN.OUT_CHANNELS = 16
    other_model = build_tiny_srn(other)
    SafeCheckpointer(
        other_model, str(tmp_path), optimizer=torch.optim.Adam(other_model.parameters())
    ).save("m")
    model = build_tiny_srn()
    resumed = SafeCheckpointer(model, str(tmp_path), optimizer=torch.optim.Adam(model.parameters()))
    with pytest.raises(
        ValueError,
        match=r"written by another model \(backbone\.\S+ is \(16,.*\) there, \(32,.*\) here\)",
    ):
        resumed.resume_or_load("", resume=True)


# ------------------------------------------------------------------ 6. duplicates


def test_an_image_listed_twice_names_both_lines(tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text(f"a/1.jpg\n1\n{WIDER_FACE}b/2.jpg\n1\n{WIDER_FACE}a/1.jpg\n1\n{WIDER_FACE}")
    with pytest.raises(
        ValueError, match=rf"{gt}:7: image a/1.jpg is listed again \(first at {gt}:1\)"
    ):
        load_wider_face(str(gt), str(tmp_path), read_sizes=False)
    listed = tmp_path / "list.txt"
    listed.write_text("a/1.jpg\nb/2.jpg\na/1.jpg\n")
    with pytest.raises(
        ValueError, match=rf"{listed}:3: image a/1.jpg is listed again \(first at {listed}:1\)"
    ):
        load_wider_face_test_list(str(listed), str(tmp_path), read_sizes=False)


@pytest.mark.parametrize("again", ["c//3.jpg", "./c/3.jpg", "c/./3.jpg", "d/../c/3.jpg"])
def test_one_image_under_another_spelling_is_listed_twice(tmp_path, again):
    """Faces split between two spellings of one image would each score against half its faces."""
    gt = tmp_path / "gt.txt"
    gt.write_text(f"c/3.jpg\n1\n{WIDER_FACE}b/2.jpg\n1\n{WIDER_FACE}{again}\n1\n{WIDER_FACE}")
    with pytest.raises(
        ValueError,
        match=rf"{gt}:7: image {re.escape(again)} is listed again "
        rf"\(first at {gt}:1 \(as c/3.jpg\)\)",
    ):
        load_wider_face(str(gt), str(tmp_path), read_sizes=False)
    labels = tmp_path / "label.txt"
    labels.write_text(f"# c/3.jpg\n1 2 10 12\n# {again}\n3 4 10 12\n")
    with pytest.raises(ValueError, match=rf"{labels}:3: image {re.escape(again)} is listed again"):
        load_retinaface_labels(str(labels), str(tmp_path), read_sizes=False)


def test_an_fddb_image_listed_twice_is_named_within_and_across_folds(tmp_path):
    fold1, fold2 = tmp_path / "fold1.txt", tmp_path / "fold2.txt"
    fold1.write_text(f"img/a\n1\n{FDDB_FACE}img/a\n1\n{FDDB_FACE}")
    with pytest.raises(
        ValueError, match=rf"{fold1}:4: image img/a is listed again \(first at {fold1}:1\)"
    ):
        load_fddb([str(fold1)], str(tmp_path), read_sizes=False)
    fold1.write_text(f"img/a\n1\n{FDDB_FACE}")
    fold2.write_text(f"img/b\n1\n{FDDB_FACE}img/a\n1\n{FDDB_FACE}")
    with pytest.raises(
        ValueError, match=rf"{fold2}: image img/a is listed again \(first at {fold1}\)"
    ):
        load_fddb([str(fold1), str(fold2)], str(tmp_path), read_sizes=False)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_annotation_file_is_named(tmp_path, content):
    gt = tmp_path / "gt.txt"
    gt.write_text(content)
    with pytest.raises(ValueError, match=rf"{gt}: lists no image"):
        load_wider_face(str(gt), str(tmp_path), read_sizes=False)
    with pytest.raises(ValueError, match=rf"{gt}: lists no image"):
        load_wider_face_test_list(str(gt), str(tmp_path), read_sizes=False)


# ------------------------------------------------------------------ 8. one bad image among many


def test_a_decompression_bomb_is_named_and_skipped_in_a_folder(tiny_model, tmp_path, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    _image(folder / "a.png")
    bomb = _bomb_png(folder / "b.png")
    _image(folder / "c.png")
    with pytest.raises(OSError, match=rf"cannot read image {bomb}: .*decompression bomb"):
        read_image(bomb, "BGR")
    out = tmp_path / "out"
    assert _demo(tiny_model, str(folder), out) == 0
    assert sorted(os.listdir(out)) == ["a.json", "a.png", "a.txt", "c.json", "c.png", "c.txt"]
    assert f"skipped 1 files, unreadable or too large: ['{bomb}']" in caplog.text


def test_a_too_large_image_and_a_fifo_are_skipped_and_the_folder_goes_on(
    tiny_model, tmp_path, caplog
):
    """A 4,200 x 4,200 photo would run the network on 17.6 MP (the bound is 4096 x 4096), and a FIFO
    named like a photo would block the read forever: both are named and skipped."""
    folder = tmp_path / "photos"
    folder.mkdir()
    _image(folder / "a.png")
    large = str(folder / "b.png")
    cv2.imwrite(large, np.full((4200, 4200, 3), 128, np.uint8))
    os.mkfifo(folder / "c.jpg")
    _image(folder / "d.png")
    out = tmp_path / "out"
    assert _demo(tiny_model, str(folder), out) == 0
    assert sorted(os.listdir(out)) == ["a.json", "a.png", "a.txt", "d.json", "d.png", "d.txt"]
    assert f"skipped 1 files, unreadable or too large: ['{large}']" in caplog.text
    assert "the network would run on 4200 x 4200 px" in caplog.text
    assert f"not regular files: ['{folder / 'c.jpg'}']" in caplog.text


def test_both_detectors_refuse_a_network_input_beyond_the_bound_at_once(mini_onnx, tmp_path):
    from srn_d2.deploy.onnx_runtime import ONNXFaceDetector
    from srn_d2.engine import FacePredictor
    from srn_d2.errors import ImageTooLargeError

    path, cfg = mini_onnx
    for detector in (ONNXFaceDetector(path), FacePredictor(cfg)):
        with pytest.raises(
            ImageTooLargeError, match=r"would run on 4100 x 4100 px, more than .*16,777,216"
        ):
            detector(np.zeros((4100, 4100, 3), np.uint8))
        detector(np.zeros((2, 4000, 3), np.uint8))  # within the bound: runs
    # Model metadata that would upscale a 48 x 64 image to 60,000 px a side: named, not a MemoryError.
    forged = _bad_model("srn_d2.min_size_test=60000,srn_d2.max_size_test=100000", tmp_path, path)
    with pytest.raises(
        ImageTooLargeError, match=r"would run on 60000 x 80000 px \(resized from 48 x 64\)"
    ):
        ONNXFaceDetector(forged)(np.zeros((48, 64, 3), np.uint8))


# ------------------------------------------------------------------ data folders


def test_copies_left_by_a_killed_generation_are_removed_and_live_ones_kept(tmp_path):
    final = tmp_path / MINI_FACES_DIR
    final.mkdir()
    (final / COMPLETE_MARKER).write_text(MARKER_TEXT)
    dead = tmp_path / f".{MINI_FACES_DIR}-{2**22 + 12345}-abcd"  # above Linux's largest process id
    live = tmp_path / f".{MINI_FACES_DIR}-{os.getpid()}-efgh"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "part.jpg").write_bytes(b"x")
    assert ensure_mini_faces(str(tmp_path)) == str(final)
    assert not dead.exists() and live.exists()


# ------------------------------------------------------------------ ONNXFaceDetector and PyTorch agree


@pytest.fixture(scope="module")
def mini_onnx(tmp_path_factory):
    """SRN_mini (GroupNorm in its stem) with random weights and every candidate kept, exported
    without the export's own check (near-equal random scores make NMS order-dependent); its config."""
    from detectron2.modeling import build_model

    from srn_d2 import model_zoo
    from srn_d2.deploy.export import deployment_metadata, export_onnx
    from srn_d2.engine import setup_cfg

    folder = tmp_path_factory.mktemp("mini_onnx")
    # Random step-1 scores sit at the 0.01 prior, on the STC threshold: keep every anchor instead.
    overrides = [
        "MODEL.SRN.SCORE_THRESH_TEST",
        "0.0",
        "MODEL.SRN.STC_MIN_FACE_PROB",
        "0.0",
        "MODEL.WEIGHTS",
        str(folder / "mini.pth"),
    ]
    cfg = setup_cfg(model_zoo.get_config_file("SRN_mini.yaml"), overrides)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    torch.save({"model": model.state_dict()}, folder / "mini.pth")
    export_onnx(
        model, (torch.zeros(3, 64, 64),), str(folder / "model.onnx"), deployment_metadata(cfg)
    )
    return str(folder / "model.onnx"), cfg


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (1, 9), (3, 2), (5, 7), (9, 6)])
def test_pytorch_and_onnx_both_detect_on_images_of_a_pixel_or_two(mini_onnx, size):
    from srn_d2.deploy.onnx_runtime import ONNXFaceDetector
    from srn_d2.engine import FacePredictor

    path, cfg = mini_onnx
    image = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    boxes, scores = ONNXFaceDetector(path)(image)
    instances = FacePredictor(cfg)(image)["instances"]  # raised on 1 x 1 and 2 x 2 images before
    assert len(boxes) > 0 and len(instances) > 0
    inside = np.array([0, 0, size[1], size[0]])
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= inside[2:]).all()
    if min(size) >= 5:
        # On 1 x 1 maps GroupNorm normalizes groups of one or two values, whose rounding the two
        # runtimes do apart (scores differ by about 1e-3, and NMS may then keep one box more):
        # from 5 px up the detections are the same.
        assert len(boxes) == len(instances)
        np.testing.assert_allclose(np.sort(scores), np.sort(instances.scores.numpy()), atol=1e-4)


def _bad_model(kind, folder, exported):
    """The model file of case ``kind``, made from a good export."""
    data = open(exported, "rb").read()
    if kind == "none":
        return None
    if kind == "missing":
        return str(folder / "missing.onnx")
    if kind in ("empty", "truncated"):
        path = folder / f"{kind}.onnx"
        path.write_bytes(b"" if kind == "empty" else data[: len(data) // 2])
        return str(path)
    import onnx

    graph = onnx.load_from_string(data)
    changes = dict(item.split("=") for item in kind.split(","))
    for prop in graph.metadata_props:
        prop.value = changes.get(prop.key, prop.value)
    path = folder / "forged.onnx"
    path.write_bytes(graph.SerializeToString())
    return str(path)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("none", "takes the path of a model.onnx, not NoneType"),
        ("missing", "missing.onnx: no such ONNX file"),
        ("empty", "empty.onnx: not a readable ONNX model"),
        ("truncated", "truncated.onnx: not a readable ONNX model"),
        (
            "srn_d2.input_format=YUV",
            "forged.onnx: metadata srn_d2.input_format = 'YUV': must be BGR or RGB",
        ),
        ("srn_d2.min_size_test=-1", "forged.onnx: metadata srn_d2.min_size_test = '-1'"),
        ("srn_d2.max_size_test=lots", "forged.onnx: metadata srn_d2.max_size_test = 'lots'"),
        (
            "srn_d2.min_size_test=800,srn_d2.max_size_test=10",
            "forged.onnx: metadata srn_d2.max_size_test = 10 is below",
        ),
    ],
)
def test_onnx_detector_names_a_bad_model(mini_onnx, tmp_path, kind, message):
    from srn_d2.deploy.onnx_runtime import ONNXFaceDetector

    with pytest.raises((ValueError, OSError), match=message):
        ONNXFaceDetector(_bad_model(kind, tmp_path, mini_onnx[0]))


@pytest.mark.parametrize(
    "image, message",
    [
        (
            np.zeros((48, 32), np.uint8),
            r"got \(48, 32\) uint8; convert YUV",
        ),  # an I420 frame of 32 x 32
        (np.zeros((32, 32, 1), np.uint8), r"got \(32, 32, 1\)"),
        (np.zeros((32, 32, 4), np.uint8), r"got \(32, 32, 4\)"),
        (np.zeros((32, 32, 3), np.float32), r"got \(32, 32, 3\) float32"),
        (np.zeros((0, 0, 3), np.uint8), r"the image is empty \(0 x 0 px\)"),
        (None, r"got None NoneType"),
    ],
)
def test_both_detectors_refuse_what_is_not_a_bgr_image(mini_onnx, image, message):
    from srn_d2.deploy.onnx_runtime import ONNXFaceDetector
    from srn_d2.engine import FacePredictor

    path, cfg = mini_onnx
    with pytest.raises(ValueError, match=message):
        ONNXFaceDetector(path)(image)
    with pytest.raises(ValueError, match=message):
        FacePredictor(cfg)(image)


@pytest.mark.slow
def test_the_export_compares_the_network_even_without_detections(tmp_path, caplog):
    import logging

    from srn_d2.deploy.export import export

    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.SCORE_THRESH_TEST = 0.99  # random weights: no detection on any sample
    caplog.set_level(logging.INFO, logger="srn_d2.export")
    export(cfg, "onnx", str(tmp_path), allow_random_weights=True)
    assert "'detections': 0" in caplog.text
    # Step 2's logits and deltas on 6 levels, step 1's logits on the 3 STC and deltas on the 3 STR levels.
    assert "network outputs: {'outputs': 18" in caplog.text


def test_the_network_check_fails_when_the_runtime_differs(monkeypatch):
    from srn_d2.deploy import export as export_module
    from srn_d2.errors import ExportError

    model = build_tiny_srn().eval()
    real_runner = export_module.exported_runner

    def off_by_a_little(path, export_format):
        run = real_runner(path, export_format)
        return lambda image: [out + 0.01 for out in run(image)]

    monkeypatch.setattr(export_module, "exported_runner", off_by_a_little)
    samples = (torch.rand(3, 64, 48) * 255,)
    with pytest.raises(ExportError, match=r"\(64, 48\) px: the exported network's outputs differ"):
        export_module.verify_network(model, "torchscript", samples)


# ------------------------------------------------------------------ evaluation files


def test_fddb_ellipses_beyond_any_photo_are_named(tmp_path):
    fold = tmp_path / "fold.txt"
    fold.write_text(f"img/a\n2\n{FDDB_FACE}1e200 30 0.1 100 100 1\n")
    with pytest.raises(
        ValueError, match=rf"{fold}:4: (an ellipse radius or centre|a number) beyond any"
    ):
        load_fddb([str(fold)], str(tmp_path), read_sizes=False)


@pytest.mark.parametrize("reader", [read_widerface_prediction_file, read_fddb_detections])
@pytest.mark.parametrize(
    "row, problem",
    [("5 5 -3 10 0.9", "negative width or height"), ("5 5 3 -0.5 0.9", "negative width or height")],
)
def test_negative_sizes_in_prediction_files_name_the_line(tmp_path, reader, row, problem):
    path = tmp_path / "preds.txt"
    path.write_text(f"img/a\n2\n1 1 10 10 0.8\n{row}\n")
    with pytest.raises(ValueError, match=rf"{path}, line 4: {problem}"):
        reader(str(path))


def test_a_non_utf8_fddb_detection_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "dets.txt"
    path.write_bytes(b"img/a\n1\n1 1 10 10 0.8\nimg/\xff\xfe\n0\n")
    with pytest.raises(ValueError, match=rf"{path}, line 4: not UTF-8 text"):
        read_fddb_detections(str(path))


def test_a_box_line_after_a_short_count_is_named(tmp_path):
    path = tmp_path / "dets.txt"
    path.write_text("img/a\n0\n1 1 10 10 0.8\nimg/b\n0\n")
    with pytest.raises(
        ValueError, match=rf"{path}, line 3: a box line '1 1 10 10 0.8' where an image path belongs"
    ):
        read_fddb_detections(str(path))


def test_fddb_without_faces_is_undefined_not_zero(tmp_path, capsys):
    assert np.isnan(
        evaluate_fddb(
            {"img/a": np.array([[1, 1, 10, 10, 0.9]])}, {"img/a": (np.zeros((0, 5)), None)}
        ).tpr_at_false_positives()
    )
    (tmp_path / "folds").mkdir()
    (tmp_path / "folds" / "FDDB-fold-01-ellipseList.txt").write_text("img/a\n0\n")
    dets = tmp_path / "dets.txt"
    dets.write_text("img/a\n1\n1 1 10 10 0.9\n")
    assert (
        fddb_cli(
            [
                "--pred",
                str(dets),
                "--gt-dir",
                str(tmp_path / "folds"),
                "--json",
                str(tmp_path / "out.json"),
            ]
        )
        == 0
    )
    assert "undefined (the folds hold no face)" in capsys.readouterr().out
    assert (tmp_path / "out.json").read_text().strip().endswith('"TPR_at_1000FP": null\n}')


# ------------------------------------------------------------------ parsers: any bytes


_PARSER_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Bytes near the formats, so that the parsers get past their first line often.
_NEAR_TEXT = st.lists(
    st.sampled_from(
        [
            b"img/a",
            b"a/1.jpg",
            b"\n",
            b" ",
            b"0",
            b"1",
            b"2",
            b"-1",
            b"1e999",
            b"nan",
            b"0.5",
            b"10",
            b"\xff",
            b"# ",
            b"\t",
        ]
    ),
    max_size=40,
).map(b"".join)
_ANY_BYTES = st.one_of(st.binary(max_size=120), _NEAR_TEXT)


def _parses_or_names_the_file(path, parse):
    try:
        parse(str(path))
    except ValueError as error:
        assert str(path) in str(error)


@_PARSER_SETTINGS
@given(content=_ANY_BYTES)
def test_any_bytes_as_wider_annotations(tmp_path, content):
    write_bytes(str(tmp_path / "gt.txt"), content)
    _parses_or_names_the_file(
        tmp_path / "gt.txt", lambda p: load_wider_face(p, str(tmp_path), read_sizes=False)
    )


@_PARSER_SETTINGS
@given(
    content=st.one_of(
        _ANY_BYTES,
        st.lists(
            st.sampled_from(
                [
                    b"# a/1.jpg",
                    b"# ./a/1.jpg",
                    b"#",
                    b"1 2 3 4",
                    b" 0" * 15,
                    b" 0.5",
                    b" 1e39",
                    b" -1",
                    b"\n",
                    b"\x00",
                    b"1_0",
                ]
            ),
            max_size=40,
        ).map(b"".join),
    )
)
def test_any_bytes_as_a_landmark_label_file(tmp_path, content):
    write_bytes(str(tmp_path / "label.txt"), content)
    _parses_or_names_the_file(
        tmp_path / "label.txt", lambda p: load_retinaface_labels(p, str(tmp_path), read_sizes=False)
    )


@_PARSER_SETTINGS
@given(content=_ANY_BYTES)
def test_any_bytes_as_an_fddb_fold(tmp_path, content):
    write_bytes(str(tmp_path / "fold.txt"), content)
    _parses_or_names_the_file(
        tmp_path / "fold.txt", lambda p: load_fddb([p], str(tmp_path), read_sizes=False)
    )


@_PARSER_SETTINGS
@given(content=_ANY_BYTES)
def test_any_bytes_as_fddb_detections(tmp_path, content):
    write_bytes(str(tmp_path / "dets.txt"), content)
    _parses_or_names_the_file(tmp_path / "dets.txt", read_fddb_detections)


@_PARSER_SETTINGS
@given(content=_ANY_BYTES)
def test_any_bytes_as_a_wider_prediction_file(tmp_path, content):
    write_bytes(str(tmp_path / "pred.txt"), content)
    _parses_or_names_the_file(tmp_path / "pred.txt", read_widerface_prediction_file)


# ------------------------------------------------------------------ training's output folder


def test_training_checks_its_output_folder_before_it_starts(tiny_model, tmp_path, capsys):
    from srn_d2.tools.train_net import run as train_cli

    config_file, _ = tiny_model
    output = tmp_path / "output"
    output.write_text("a file where the checkpoints would go")
    assert train_cli(["--config-file", config_file, "OUTPUT_DIR", str(output)]) == 2
    assert f"{output}: exists and is not a folder" in capsys.readouterr().err
    assert output.read_text() == "a file where the checkpoints would go"


@pytest.mark.parametrize(
    "name",
    [
        "config.yaml",
        "log.txt",
        "log.txt.rank1",
        "metrics.json",
        "model_final.pth",
        "model_0004999.pth",
        "last_checkpoint",
    ],
)
@pytest.mark.parametrize("config", ["yaml", "lazy"])
def test_a_link_planted_where_a_run_writes_is_refused_before_it_starts(
    tiny_model, tmp_path, capsys, name, config
):
    """Detectron2 writes its config dump and logs through whatever is there; checkpoints would be
    refused only at the end of the schedule. Every file a run writes is checked at its start."""
    from srn_d2.tools.train_net import run as train_cli

    output, victim = tmp_path / "output", tmp_path / "victim.txt"
    output.mkdir()
    victim.write_text("someone else's file")
    os.symlink(victim, output / name)
    if config == "yaml":
        args = ["--config-file", tiny_model[0], "OUTPUT_DIR", str(output)]
    else:
        args = [
            "--config-file",
            os.path.join(ROOT, "configs", "SRN_mini.py"),
            f"train.output_dir={output}",
        ]
    assert train_cli(args) == 2
    assert f"{output / name}: is a link; refusing to write through it" in capsys.readouterr().err
    assert victim.read_text() == "someone else's file" and os.listdir(output) == [name]


def test_non_finite_weights_in_a_model_zoo_pickle_are_named(tmp_path):
    """The Detectron2 model-zoo layout ({"model": ..., "__author__": ...}) is checked as plain files are."""
    import pickle

    state = {k: v.numpy() for k, v in build_tiny_srn().state_dict().items()}
    state["head.shared.bbox_pred.weight"] = np.full_like(
        state["head.shared.bbox_pred.weight"], np.nan
    )
    with open(tmp_path / "zoo.pkl", "wb") as f:
        pickle.dump({"model": state, "__author__": "someone"}, f)
    with pytest.raises(
        UnreadableCheckpointError, match=r"zoo.pkl: head.shared.bbox_pred.weight holds NaN"
    ):
        load_inference_weights(build_tiny_srn(), str(tmp_path / "zoo.pkl"))


def test_a_checkpoint_holding_a_list_is_named(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(UnreadableCheckpointError, match=r"list.pth holds a list, not a dict"):
        load_inference_weights(build_tiny_srn(), str(tmp_path / "list.pth"))


def _constant_model(folder, boxes, scores, batch_index=None):
    """An ONNX model with the export's interface and metadata whose outputs are the given constants."""
    import onnx
    from onnx import TensorProto, helper

    from srn_d2.deploy.onnx_runtime import INPUT_FORMAT, MAX_SIZE_TEST, MIN_SIZE_TEST

    batched = batch_index is not None
    outputs = {
        "boxes": np.asarray(boxes, np.float32),
        "scores": np.asarray(scores, np.float32),
        "classes": np.zeros(len(scores), np.int64),
    }
    if batched:
        outputs["batch_index"] = np.asarray(batch_index, np.int64)
    nodes = [
        helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(value, name))
        for name, value in outputs.items()
    ]
    inputs = (
        [
            helper.make_tensor_value_info("images", TensorProto.FLOAT, ["b", 3, "h", "w"]),
            helper.make_tensor_value_info("image_sizes", TensorProto.INT64, ["b", 2]),
        ]
        if batched
        else [helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, "h", "w"])]
    )
    graph = helper.make_graph(
        nodes,
        "constant",
        inputs,
        [
            helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)
            )
            for name, value in outputs.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in ((INPUT_FORMAT, "BGR"), (MIN_SIZE_TEST, "0"), (MAX_SIZE_TEST, "0")):
        model.metadata_props.add(key=key, value=value)
    path = os.path.join(str(folder), "constant.onnx")
    onnx.save(model, path)
    return path


def test_onnx_detector_drops_and_counts_unusable_detections(tmp_path, caplog):
    from srn_d2.deploy.onnx_runtime import ONNXFaceDetector

    boxes = [[0, 0, 10, 10], [5, 5, 1, 9], [0, 0, np.inf, 4], [1, 1, 2, 2]]
    detector = ONNXFaceDetector(_constant_model(tmp_path, boxes, [0.9, 0.8, 0.7, np.nan]))
    got_boxes, got_scores = detector(np.zeros((20, 20, 3), np.uint8))
    assert got_boxes.tolist() == [[0, 0, 10, 10]] and got_scores.tolist() == [pytest.approx(0.9)]
    assert (
        "dropped 3 of 4 detections with a non-finite value or a box of negative width"
        in caplog.text
    )


@pytest.mark.parametrize(
    "boxes, scores, batch_index, message",
    [
        ([0, 0, 10, 10], [0.9], None, r"outputs of shapes \[\(4,\), \(1,\)\]"),
        ([[0, 0, 10, 10]] * 3, [0.9], None, r"outputs of shapes \[\(3, 4\), \(1,\)\]"),
        ([[0, 0, 10, 10]], [0.9], [5], r"a batch_index of 5 or 5 for a batch of 1 images"),
    ],
    ids=["flat_boxes", "three_boxes_one_score", "index_past_the_batch"],
)
def test_onnx_detector_names_a_model_whose_outputs_do_not_fit(
    tmp_path, boxes, scores, batch_index, message
):
    from srn_d2.deploy.onnx_runtime import ONNXFaceDetector

    detector = ONNXFaceDetector(_constant_model(tmp_path, boxes, scores, batch_index))
    with pytest.raises(ValueError, match=rf"constant.onnx: its graph gave {message}"):
        detector(np.zeros((20, 20, 3), np.uint8))


def test_only_input_errors_become_one_line_and_a_bug_keeps_its_traceback(capsys):
    """srn_d2's own checks raise InputError (a ValueError) naming what is at fault: one line, exit 2.
    A ValueError from anywhere else is a bug, and a one-line message would hide where it came from."""
    from srn_d2.errors import InputError
    from srn_d2.tools import run_command

    def named(argv):
        raise InputError("labels.txt:3: expected 20 numbers")

    def bug(argv):
        return int("not a number")

    assert run_command(named, []) == 2
    assert capsys.readouterr().err == "error: labels.txt:3: expected 20 numbers\n"
    with pytest.raises(ValueError, match="invalid literal for int"):
        run_command(bug, [])
