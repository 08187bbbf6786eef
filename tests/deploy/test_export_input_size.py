"""export --input-size: a one-image ONNX graph for one image size, recorded in its metadata,
which ONNXFaceDetector holds images to; and its bad input: options it cannot go with, sizes
that are no sizes, and a model whose recorded size is damaged."""

import re

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from srn_d2.deploy.onnx_runtime import INPUT_SIZE, ONNXFaceDetector, parse_input_size
from srn_d2.errors import InputError
from srn_d2.tools.export import main
from srn_d2.utils.image_checks import MAX_TEST_PIXELS


def _export(config_file, weights, output, *extra):
    return main(
        ["--config-file", config_file, "--output", str(output), *extra, "MODEL.WEIGHTS", weights]
    )


def _metadata(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_the_export_takes_one_size_and_the_detector_holds_images_to_it(tiny_model, tmp_path):
    config_file, weights = tiny_model
    assert _export(config_file, weights, tmp_path, "--input-size", "83x61") == 0
    path = tmp_path / "model.onnx"
    assert _metadata(path)[INPUT_SIZE] == "83x61"
    (graph_input,) = onnx.load(str(path)).graph.input
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim] == [3, 61, 83]
    detector = ONNXFaceDetector(str(path))
    boxes, scores = detector(np.zeros((61, 83, 3), np.uint8))
    assert boxes.shape == (0, 4) and scores.shape == (0,)  # random weights: scores at the prior
    with pytest.raises(InputError, match=r"exported for 83x61 images only .* this one is 84x61"):
        detector([np.zeros((61, 83, 3), np.uint8), np.zeros((61, 84, 3), np.uint8)])
    # Without the option the same export takes any size, and records none.
    assert _export(config_file, weights, tmp_path / "any") == 0
    assert INPUT_SIZE not in _metadata(tmp_path / "any" / "model.onnx")
    assert ONNXFaceDetector(str(tmp_path / "any" / "model.onnx")).input_size is None


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--format", "torchscript"], "--input-size = '83x61': fixes the size of a one-image ONNX"),
        (["--batch"], "--input-size = '83x61': fixes the size of a one-image ONNX"),
        (
            ["--quantize", "int8", "--calibration-dataset", "mini_faces_train"],
            "--quantize = 'int8': calibrates on images of many sizes",
        ),
    ],
)
def test_options_a_fixed_size_cannot_go_with_are_refused(
    tiny_model, tmp_path, capsys, extra, message
):
    config_file, weights = tiny_model
    assert _export(config_file, weights, tmp_path, "--input-size", "83x61", *extra) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "size",
    ["0x480", "640x0", "640", "640x", "x480", "-640x480", "640X480", "6e2x480", "99999x99999"],
)
def test_a_size_that_is_no_size_is_refused_naming_the_option(tiny_model, tmp_path, capsys, size):
    config_file, weights = tiny_model
    # "=": argparse would take "-640x480" for an option of its own.
    assert _export(config_file, weights, tmp_path, f"--input-size={size}") == 2
    assert f"--input-size = {size!r}: must be WIDTHxHEIGHT" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_recorded_size_is_named(tiny_model, tmp_path):
    config_file, weights = tiny_model
    assert _export(config_file, weights, tmp_path, "--input-size", "83x61") == 0
    model = onnx.load(str(tmp_path / "model.onnx"))
    (entry,) = [p for p in model.metadata_props if p.key == INPUT_SIZE]
    entry.value = "big"
    onnx.save(model, str(tmp_path / "damaged.onnx"))
    with pytest.raises(
        InputError,
        match=re.escape(f"damaged.onnx: metadata {INPUT_SIZE} = 'big': must be WIDTHxHEIGHT"),
    ):
        ONNXFaceDetector(str(tmp_path / "damaged.onnx"))


@given(st.text(alphabet="0123456789x-+ .eX٣", max_size=14))
def test_any_text_is_a_size_or_refused_naming_where(text):
    try:
        height, width = parse_input_size(text, "somewhere")
    except InputError as error:
        assert str(error).startswith(f"somewhere = {text!r}: must be WIDTHxHEIGHT")
        return
    assert height >= 1 and width >= 1 and height * width <= MAX_TEST_PIXELS
    assert re.fullmatch(r"0*%dx0*%d" % (width, height), text)
