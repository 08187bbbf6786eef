"""The demo on the tiny test model: images, a folder with a corrupt file, a video."""

import json

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

from srn_d2.tools.detect import main
from srn_testing import build_tiny_srn, tiny_srn_cfg

MAX_DETS = 15


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A config file and weights of the tiny SRN, and the model they describe."""
    root = tmp_path_factory.mktemp("tiny")
    cfg = tiny_srn_cfg()
    # Untrained scores sit near the 0.01 prior: keep every candidate.
    cfg.MODEL.SRN.SCORE_THRESH_TEST = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = MAX_DETS
    cfg.INPUT.FORMAT = "RGB"
    model = build_tiny_srn(cfg, seed=3).eval()
    DetectionCheckpointer(model, save_dir=str(root)).save("tiny")
    config_file = root / "tiny.yaml"
    config_file.write_text(cfg.dump())
    return str(config_file), str(root / "tiny.pth"), model


def _run(tiny, inputs, output, *extra):
    config_file, weights, _ = tiny
    argv = [
        "--config-file",
        config_file,
        "--input",
        *inputs,
        "--output",
        str(output),
        "--confidence-threshold",
        "0",
    ]
    return main(argv + list(extra) + ["--opts", "MODEL.WEIGHTS", weights])


def _write_images(folder):
    rng = np.random.default_rng(0)
    images = {}
    for stem, (h, w) in {"first": (48, 64), "second": (40, 40)}.items():
        images[stem] = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{stem}.png"), images[stem])
    (folder / "broken.png").write_bytes(b"this is not a png")
    (folder / "notes.txt").write_text("not an image")
    return images


def test_folder_outputs(tmp_path, tiny):
    folder = tmp_path / "images"
    folder.mkdir()
    images = _write_images(folder)
    out = tmp_path / "out"
    assert _run(tiny, [str(folder)], out) == 0
    assert sorted(p.name for p in out.glob("*.json")) == ["first.json", "second.json"]
    assert not (out / "broken.txt").exists() and not (out / "notes.txt").exists()

    model = tiny[2]
    for stem, bgr in images.items():
        drawn = cv2.imread(str(out / f"{stem}.png"))
        assert drawn.shape == bgr.shape

        lines = (out / f"{stem}.txt").read_text().splitlines()
        assert lines[0] == stem
        count = int(lines[1])
        assert 0 < count <= MAX_DETS and len(lines) == count + 2
        rows = np.array([[float(v) for v in line.split()] for line in lines[2:]])
        assert rows.shape == (count, 5)

        detections = json.loads((out / f"{stem}.json").read_text())
        assert len(detections) == count
        assert np.allclose([d["bbox"] + [d["score"]] for d in detections], rows, atol=0.01)

        # The same weights on the same RGB image, called directly.
        rgb = torch.as_tensor(bgr[:, :, ::-1].transpose(2, 0, 1).copy())
        with torch.no_grad():
            expected = model([{"image": rgb}])[0]["instances"]
        assert np.allclose(rows[:, 4], expected.scores.numpy(), atol=1e-6)
        boxes = expected.pred_boxes.tensor.numpy()
        assert np.allclose(rows[:, :2], boxes[:, :2], atol=0.01)
        assert np.allclose(rows[:, 2:4], boxes[:, 2:] - boxes[:, :2], atol=0.01)


def test_confidence_threshold_filters(tmp_path, tiny):
    folder = tmp_path / "images"
    folder.mkdir()
    _write_images(folder)
    _run(tiny, [str(folder / "first.png")], tmp_path / "all")
    scores = [d["score"] for d in json.loads((tmp_path / "all" / "first.json").read_text())]
    # Halfway between two written (rounded) scores, so that rounding cannot move a score across it.
    distinct = sorted(set(scores))
    threshold = (distinct[len(distinct) // 2 - 1] + distinct[len(distinct) // 2]) / 2
    config_file, weights, _ = tiny
    main(
        [
            "--config-file",
            config_file,
            "--input",
            str(folder / "first.png"),
            "--output",
            str(tmp_path / "some"),
        ]
        + ["--confidence-threshold", str(threshold), "--opts", "MODEL.WEIGHTS", weights]
    )
    kept = json.loads((tmp_path / "some" / "first.json").read_text())
    assert len(kept) == sum(s >= threshold for s in scores) < len(scores)


def _exit_message(capsys, tiny, inputs, output, *extra):
    assert _run(tiny, inputs, output, *extra) == 2
    return capsys.readouterr().err


def test_unreadable_image_named_directly_is_an_error(tmp_path, tiny, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    assert "cannot read image" in _exit_message(capsys, tiny, [str(bad)], tmp_path / "out")
    message = _exit_message(capsys, tiny, [str(tmp_path / "missing.png")], tmp_path / "out")
    assert "missing.png does not exist" in message


def test_video(tmp_path, tiny):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v video")
    rng = np.random.default_rng(1)
    for _ in range(3):
        writer.write(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "out"
    assert _run(tiny, [str(path)], out) == 0
    frames = json.loads((out / "clip.json").read_text())
    assert [f["frame"] for f in frames] == [0, 1, 2]
    assert all(0 < len(f["detections"]) <= MAX_DETS for f in frames)
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()


def test_multi_scale_test_through_the_demo(tmp_path, tiny):
    folder = tmp_path / "images"
    folder.mkdir()
    _write_images(folder)
    config_file, weights, _ = tiny
    main(
        [
            "--config-file",
            config_file,
            "--input",
            str(folder / "second.png"),
            "--output",
            str(tmp_path / "tta"),
        ]
        + ["--confidence-threshold", "0", "--opts", "MODEL.WEIGHTS", weights]
        + ["TEST.AUG.ENABLED", "True", "TEST.AUG.SRN.MAX_SIZE", "80"]
    )
    lines = (tmp_path / "tta" / "second.txt").read_text().splitlines()
    boxes = np.array([[float(v) for v in line.split()] for line in lines[2:]])
    assert len(boxes) == int(lines[1]) > 0
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 40 + 0.01).all()


def test_landmark_model_writes_its_points(tmp_path):
    """A landmark model's JSON has each face's five points, those of the model."""
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.LANDMARKS.ENABLED = True
    cfg.MODEL.SRN.SCORE_THRESH_TEST = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 3
    cfg.DATASETS.TEST = ("mini_faces_val",)
    model = build_tiny_srn(cfg, seed=3).eval()
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("landmarks")
    (tmp_path / "landmarks.yaml").write_text(cfg.dump())
    image = np.full((64, 80, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "face.png"), image)
    out = tmp_path / "out"
    assert (
        main(
            [
                "--config-file",
                str(tmp_path / "landmarks.yaml"),
                "--input",
                str(tmp_path / "face.png"),
                "--output",
                str(out),
                "--confidence-threshold",
                "0",
                "--opts",
                "MODEL.WEIGHTS",
                str(tmp_path / "landmarks.pth"),
            ]
        )
        == 0
    )
    detections = json.loads((out / "face.json").read_text())
    with torch.no_grad():
        expected = model([{"image": torch.from_numpy(image.transpose(2, 0, 1).copy()).float()}])[0][
            "instances"
        ]
    assert len(detections) == 3
    np.testing.assert_allclose(
        [d["landmarks"] for d in detections], expected.pred_keypoints[..., :2].numpy(), atol=0.01
    )


def _write_video(path, frames, size=(160, 120), fps=5.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v video")
    rng = np.random.default_rng(1)
    for _ in range(frames):
        writer.write(
            np.full((size[1], size[0], 3), 128, np.uint8)
            + rng.integers(0, 20, (size[1], size[0], 3), dtype=np.uint8)
        )
    writer.release()
    return str(path)


def _has_frame_rate_band(bgr):
    """The top-left band of draw_frame_rate: black, with white text in it."""
    band = bgr[2:20, 2:60]
    return (band.max(axis=2) < 40).mean() > 0.5 and (band.min(axis=2) > 200).any()


def test_frame_rate_is_frames_over_detection_seconds_recent_and_overall():
    from srn_d2.apps.face_demo import FrameRate

    rate = FrameRate(window=2)
    for seconds in (0.1, 0.1, 0.2):
        rate.add(seconds)
    assert rate.frames == 3
    assert rate.recent == pytest.approx(2 / 0.3) and rate.overall == pytest.approx(3 / 0.4)


def test_the_frame_rate_is_written_in_the_top_left_corner_only():
    from srn_d2.apps.face_demo import draw_frame_rate

    image = np.full((120, 200, 3), 128, np.uint8)
    drawn = draw_frame_rate(image.copy(), 23.46)
    assert _has_frame_rate_band(drawn)
    assert (drawn[40:] == 128).all() and (drawn[:, 140:] == 128).all()


def test_video_frames_show_the_frame_rate_and_the_log_compares_it_with_the_videos(
    tmp_path, tiny, caplog
):
    path = _write_video(tmp_path / "clip.mp4", frames=4)
    out = tmp_path / "out"
    with caplog.at_level("INFO", logger="srn_d2.detect"):
        assert _run(tiny, [path], out) == 0
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    shown = [frame for ok, frame in iter(capture.read, (False, None)) if ok]
    capture.release()
    assert len(shown) == 4 and all(_has_frame_rate_band(frame) for frame in shown)
    assert (
        "clip.mp4: 4 frames, detection at" in caplog.text and "the video runs at 5.0" in caplog.text
    )


def _camera_from(video, monkeypatch):
    """cv2.VideoCapture(index) opens ``video`` instead of a camera; returns what the window was shown."""
    real_capture, shown = cv2.VideoCapture, []
    monkeypatch.setattr(
        cv2, "VideoCapture", lambda index: real_capture(video) if index == 0 else real_capture("")
    )
    return shown


def test_webcam_shows_each_frame_with_its_rate_until_the_camera_stops(
    tmp_path, tiny, monkeypatch, caplog
):
    shown = _camera_from(_write_video(tmp_path / "camera.mp4", frames=3), monkeypatch)
    windows = []
    monkeypatch.setattr(cv2, "namedWindow", lambda name, flags: windows.append(name))
    monkeypatch.setattr(cv2, "imshow", lambda name, image: shown.append(image.copy()))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: -1)
    monkeypatch.setattr(cv2, "destroyWindow", lambda name: windows.remove(name))
    config_file, weights, _ = tiny
    with caplog.at_level("INFO", logger="srn_d2.detect"):
        assert (
            main(
                [
                    "--config-file",
                    config_file,
                    "--webcam",
                    "--output",
                    str(tmp_path / "out"),
                    "--opts",
                    "MODEL.WEIGHTS",
                    weights,
                ]
            )
            == 0
        )
    assert len(shown) == 3 and all(_has_frame_rate_band(frame) for frame in shown)
    assert windows == [] and "camera 0: 3 frames, detection at" in caplog.text


def test_webcam_stops_on_escape(tmp_path, tiny, monkeypatch):
    shown = _camera_from(_write_video(tmp_path / "camera.mp4", frames=5), monkeypatch)
    monkeypatch.setattr(cv2, "namedWindow", lambda name, flags: None)
    monkeypatch.setattr(cv2, "imshow", lambda name, image: shown.append(image))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: 27 if len(shown) == 2 else -1)
    monkeypatch.setattr(cv2, "destroyWindow", lambda name: None)
    config_file, weights, _ = tiny
    assert main(["--onnx", "unused.onnx", "--webcam"]) == 2  # the export must exist
    assert (
        main(["--config-file", config_file, "--webcam", "0", "--opts", "MODEL.WEIGHTS", weights])
        == 0
    )
    assert len(shown) == 2


def test_webcam_errors_name_the_camera_or_the_missing_window(tmp_path, tiny, monkeypatch, capsys):
    config_file, weights, _ = tiny
    _camera_from(_write_video(tmp_path / "camera.mp4", frames=2), monkeypatch)
    argv = [
        "--config-file",
        config_file,
        "--output",
        str(tmp_path / "out"),
        "--opts",
        "MODEL.WEIGHTS",
        weights,
    ]
    assert main(argv[:2] + ["--webcam", "3"] + argv[2:]) == 2
    assert "cannot open camera 3 (--webcam 3)" in capsys.readouterr().err
    if "GUI:                           NONE" in cv2.getBuildInformation():
        assert main(argv[:2] + ["--webcam"] + argv[2:]) == 2
        error = capsys.readouterr().err
        assert "no GUI" in error and "--input" in error and "Traceback" not in error
    with pytest.raises(SystemExit):
        main(argv[:2] + ["--webcam", "0", "--input", "x.jpg"] + argv[2:])  # one source at a time
