"""The export of a landmark model: ONNX and TorchScript, one image and batched, give PyTorch's
points within 0.01 px; ONNXFaceDetector and demo.py --onnx return and write them; a graph
whose landmark output is not what the export writes is refused by name."""

import numpy as np
import pytest
import torch

from srn_d2.deploy.export import (
    FORMATS,
    batched_runner,
    export,
    exported_runner,
    verify,
    verify_batched,
)
from srn_d2.deploy.onnx_runtime import LANDMARKS, ONNXFaceDetector
from srn_d2.engine import FacePredictor
from srn_testing import onnx_demo_detections, spread_landmark_srn

SIZES = [(97, 131), (64, 48), (150, 101)]


def _image(height, width, seed):
    return torch.randint(
        0, 256, (3, height, width), generator=torch.Generator().manual_seed(seed)
    ).float()


@pytest.fixture(scope="module")
def landmark_model(tmp_path_factory):
    return spread_landmark_srn(str(tmp_path_factory.mktemp("landmark_export")))


@pytest.mark.slow
@pytest.mark.parametrize("export_format", FORMATS)
def test_one_image_export_gives_the_pytorch_landmarks(landmark_model, tmp_path, export_format):
    cfg, model = landmark_model
    run = exported_runner(export(cfg, export_format, str(tmp_path)), export_format)
    for height, width in SIZES:
        image = _image(height, width, height)
        report = verify(model, run, image)  # ExportError beyond 0.01 px on any point
        assert report["detections"] == 60 and report["landmark_diff_px"] <= 0.01
        boxes, scores, classes, landmarks = run(image.numpy())
        assert landmarks.shape == (60, 5, 2)
        # Points are not clipped: some of an untrained model's leave the image.
        spread = landmarks.reshape(-1, 2)
        assert spread.std(axis=0).min() > 5


@pytest.mark.slow
@pytest.mark.parametrize("export_format", FORMATS)
def test_batched_export_gives_each_image_its_landmarks(landmark_model, tmp_path, export_format):
    cfg, model = landmark_model
    path = export(cfg, export_format, str(tmp_path), batched=True)
    images = [_image(h, w, h) for h, w in ((150, 131), (64, 48), (97, 101))]
    report = verify_batched(model, batched_runner(path, export_format), images)
    assert report["image 0 alone"]["detections"] == 60
    assert all(report[f"image {i}"]["landmark_diff_px"] <= 0.01 for i in range(3))
    outputs = exported_runner(path, export_format)(
        *[np.stack([i.numpy() for i in images[1:2]] * 2), np.array([[64, 48], [64, 48]])]
    )
    assert len(outputs) == 5 and outputs[4].shape == (120, 5, 2)
    np.testing.assert_array_equal(outputs[4][outputs[3] == 0], outputs[4][outputs[3] == 1])


@pytest.mark.slow
def test_onnx_face_detector_and_demo_return_the_predictor_landmarks(tmp_path):
    """Through the test-time resize: points scaled back to the image's pixels, not clipped."""
    cfg, _ = spread_landmark_srn(
        str(tmp_path), **{"INPUT.MIN_SIZE_TEST": "120", "INPUT.MAX_SIZE_TEST": "170"}
    )
    path = export(cfg, "onnx", str(tmp_path))
    detector = ONNXFaceDetector(path)
    assert detector.has_landmarks
    bgr = np.ascontiguousarray(_image(181, 243, 7).permute(1, 2, 0).numpy().astype(np.uint8))
    boxes, scores, landmarks = detector(bgr)
    expected = FacePredictor(cfg)(bgr)["instances"]
    assert len(scores) == len(expected) == 60
    order = np.argsort(-scores, kind="stable")
    np.testing.assert_allclose(scores[order], expected.scores.numpy(), atol=1e-4)
    np.testing.assert_allclose(
        landmarks[order], expected.pred_keypoints[..., :2].numpy(), atol=0.01
    )
    assert landmarks.min() < 0 or landmarks[..., 0].max() > 243 or landmarks[..., 1].max() > 181
    ((_, _, listed),) = detector([bgr])
    np.testing.assert_array_equal(listed, landmarks)

    written = onnx_demo_detections(path, bgr, tmp_path)
    assert len(written) == 60
    by_score = sorted(written, key=lambda d: -d["score"])
    np.testing.assert_allclose(
        np.array([d["landmarks"] for d in by_score]), landmarks[order], atol=0.01
    )


@pytest.mark.slow
def test_a_boxes_only_export_still_returns_boxes_and_scores(tmp_path):
    cfg, _ = spread_landmark_srn(str(tmp_path), **{"MODEL.SRN.LANDMARKS.ENABLED": "False"})
    detector = ONNXFaceDetector(export(cfg, "onnx", str(tmp_path)))
    assert not detector.has_landmarks
    assert len(detector(np.zeros((50, 70, 3), np.uint8))) == 2


def _graph_with_outputs(path, outputs):
    """An ONNX model taking ``image`` (3, H, W) with the export's metadata and these (name, rank) outputs."""
    import onnx
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, "h", "w"])
    nodes, values = [], []
    for name, rank in outputs:
        shape = helper.make_tensor("shape_" + name, TensorProto.INT64, [rank], [1] * rank)
        nodes.append(helper.make_node("Constant", [], ["shape_value_" + name], value=shape))
        nodes.append(helper.make_node("ConstantOfShape", ["shape_value_" + name], [name]))
        values.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None] * rank))
    graph = helper.make_graph(nodes, "fake", [image], values)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (
        ("srn_d2.input_format", "BGR"),
        ("srn_d2.min_size_test", "0"),
        ("srn_d2.max_size_test", "0"),
    ):
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    "outputs, message",
    [
        # landmarks of the wrong rank: (N, 10) flat instead of (N, K, 2)
        (
            [("boxes", 2), ("scores", 1), ("classes", 1), (LANDMARKS, 2)],
            "'landmarks' of rank 2; the export writes",
        ),
        # landmarks before the classes: not an interface the export writes
        ([("boxes", 2), ("scores", 1), (LANDMARKS, 3), ("classes", 1)], "followed by 'landmarks'"),
    ],
)
def test_a_graph_with_other_landmark_outputs_is_refused_by_name(tmp_path, outputs, message):
    path = _graph_with_outputs(str(tmp_path / "fake.onnx"), outputs)
    with pytest.raises(ValueError, match=message) as error:
        ONNXFaceDetector(path)
    assert str(error.value).startswith(path)


@pytest.mark.slow
@pytest.mark.parametrize("export_format", FORMATS)
@pytest.mark.parametrize("batched", [False, True], ids=["one_image", "batched"])
def test_a_landmark_export_runs_on_images_without_a_candidate_face(
    tmp_path, export_format, batched
):
    """A faceless frame leaves no candidate: the graph must return empty outputs, not fail in
    the landmark decoding (a reshape with an inferred dimension cannot resolve on zero rows)."""
    cfg, _ = spread_landmark_srn(str(tmp_path), **{"MODEL.SRN.SCORE_THRESH_TEST": "1.0"})
    path = export(cfg, export_format, str(tmp_path), batched=batched)
    run = exported_runner(path, export_format)
    black = np.zeros((3, 77, 93), dtype=np.float32)
    outputs = run(black[None], np.array([[77, 93]])) if batched else run(black)
    boxes, landmarks = outputs[0], outputs[-1]
    assert boxes.shape == (0, 4) and landmarks.shape == (0, 5, 2)
    if export_format == "onnx" and not batched:
        detector = ONNXFaceDetector(path)
        boxes, scores, points = detector(np.zeros((120, 160, 3), dtype=np.uint8))
        assert boxes.shape == (0, 4) and scores.shape == (0,) and points.shape == (0, 5, 2)
