"""Submission / detection text files (srn_d2.evaluation.prediction_files)."""

import os

import numpy as np
import pytest

from srn_d2.evaluation.prediction_files import (
    _parse_plain_decimals,
    parse_box_lines,
    read_fddb_detections,
    read_widerface_prediction_file,
    read_widerface_predictions,
    write_fddb_detections,
    write_widerface_predictions,
)


def write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    predictions = {
        "0--Parade/0_Parade_marchingband_1_465": np.column_stack(
            [rng.uniform(-5, 900, (40, 2)), rng.uniform(0, 300, (40, 2)), rng.uniform(0, 1, 40)]
        ),
        "1--Handshaking/1_Handshaking_1_2": np.zeros((0, 5)),
    }
    write_widerface_predictions(str(tmp_path), predictions)
    first = (tmp_path / "0--Parade" / "0_Parade_marchingband_1_465.txt").read_text().splitlines()
    assert first[:2] == ["0_Parade_marchingband_1_465", "40"]
    back = read_widerface_predictions(str(tmp_path), list(predictions))
    assert set(back) == set(predictions)
    # Written to 0.01 px and 1e-6 score.
    key = "0--Parade/0_Parade_marchingband_1_465"
    np.testing.assert_allclose(back[key][:, :4], predictions[key][:, :4], rtol=0, atol=0.005 + 1e-9)
    np.testing.assert_allclose(back[key][:, 4], predictions[key][:, 4], rtol=0, atol=5e-7 + 1e-12)
    assert back["1--Handshaking/1_Handshaking_1_2"].shape == (0, 5)
    # Without a list of images, every <event>/<image>.txt is read.
    assert set(read_widerface_predictions(str(tmp_path))) == set(predictions)


@pytest.mark.parametrize(
    "body",
    [
        b"1 2 3 4 0.5\n-1.25 0.001 10 20 1\n",
        b"  7   8\t9 10 0.125  \r\n\n3 4 5 6 .5\n\n",
        b"1e2 2E-1 3 4 5e-1\n5 6 7 8 1E0\n",  # exponents: line-by-line path
        b"123456789012345678 1 2 3 0.1\n0.0000000000000001 -0 5. 6 7\n",  # long numbers
    ],
)
def test_parsed_values_equal_python_float(body):
    lines = [line.split() for line in body.splitlines() if line.split()]
    expected = np.array([[float(t) for t in line] for line in lines])
    parsed = parse_box_lines(body, len(expected), "f.txt", 3)
    np.testing.assert_array_equal(parsed, expected)
    assert np.array_equal(np.signbit(parsed), np.signbit(expected))


def test_plain_decimals_take_the_vectorized_path():
    rng = np.random.default_rng(1)
    values = np.round(rng.uniform(-1000, 1000, (200, 5)), 6)
    body = "".join("%.2f %.3f %.0f %.1f %.6f\n" % tuple(row) for row in values).encode()
    fast = _parse_plain_decimals(body)
    assert fast is not None
    expected = np.array([float(t) for t in body.split()])
    np.testing.assert_array_equal(fast[0], expected)
    np.testing.assert_array_equal(fast[1], np.repeat(np.arange(200), 5))
    assert _parse_plain_decimals(b"1 2 3 4 1e-5\n") is None


def test_missing_files_warn_once_and_count_as_none(tmp_path):
    write_widerface_predictions(str(tmp_path), {"e/a": np.array([[1, 2, 3, 4, 0.5]])})
    ids = ["e/a", "e/b", "f/c"]
    with pytest.warns(UserWarning, match=r"2 image\(s\).*e/b, f/c") as record:
        predictions = read_widerface_predictions(str(tmp_path), ids)
    assert len(record) == 1
    assert set(predictions) == {"e/a"}


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("a\n2\n1 2 3 4 0.5\n1 2 3 0.5\n", 4, "expected 5 numbers"),
        ("a\n2\n1 2 3 4 0.5\n1 2 x 4 0.5\n", 4, "not a number"),
        ("a\n2\n1 2 3 4 0.5\n", 2, "declares 2 boxes, found 1"),
        ("a\n1\n1 2 3 4 0.5\n1 2 3 4 0.5\n", 4, "more boxes than"),
        ("a\ntwo\n1 2 3 4 0.5\n", 2, "number of boxes"),
        ("a\n", 2, "missing the number of boxes"),
        ("", 1, "missing the number of boxes"),
        # Right number of values, wrong line structure: 4 + 6 numbers.
        ("a\n2\n1 2 3 4\n1 2 3 4 5 6\n", 3, "expected 5 numbers"),
        ("a\n1\n1 2 3 4 0\x005\n", 3, "not a number"),
        # One infinite score would squash every other score in the min-max normalization.
        ("a\n2\n1 2 3 4 0.5\n1 2 3 4 inf\n", 4, "not finite"),
        ("a\n1\n1 2 3 4 -Infinity\n", 3, "not finite"),
        ("a\n1\nnan 2 3 4 0.5\n", 3, "not finite"),
        ("a\n1\n1 2 3 4 1e999\n", 3, "not finite"),
    ],
)
def test_malformed_file_names_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "e" / "img.txt"
    write_text(str(path), text)
    with pytest.raises(ValueError, match=message) as error:
        read_widerface_prediction_file(str(path))
    assert f"{path}, line {line}:" in str(error.value)


def test_fddb_detection_file(tmp_path):
    detections = {
        "2002/08/11/big/img_591": np.array([[10, 20, 30, 40, 0.9], [1, 2, 3, 4, 0.1]]),
        "2002/08/26/big/img_265": np.zeros((0, 5)),
        "2003/01/01/big/img_1": np.array([[5, 5, 5, 5, 0.5]]),
    }
    path = tmp_path / "dets.txt"
    write_fddb_detections(str(path), detections)
    back = read_fddb_detections(str(path))
    assert list(back) == list(detections)
    for name in detections:
        np.testing.assert_allclose(back[name], detections[name].reshape(-1, 5))

    write_text(str(path), "img_1\n2\n1 2 3 4 0.5\nimg_2\n0\n")
    with pytest.raises(ValueError, match=rf"{path}, line 4: expected 5 numbers"):
        read_fddb_detections(str(path))
    write_text(str(path), "img_1\n3\n1 2 3 4 0.5\n")
    with pytest.raises(ValueError, match=rf"{path}, line 2: img_1 declares 3 boxes"):
        read_fddb_detections(str(path))


def test_boxes_on_one_line_longer_than_the_bound_are_named_before_parsing(tmp_path):
    """200,000 boxes on one line (5.6 MB): named at once, not after gigabytes of parse arrays."""
    path = tmp_path / "a.txt"
    path.write_bytes(b"a\n200000\n" + b"1 2 3 4 0.5 " * 200_000 + b"\n")
    with pytest.raises(ValueError, match=r"a.txt, line 3: a line of 2,400,000 bytes.*1,048,576"):
        read_widerface_prediction_file(str(path))
    path.write_bytes(b"a\n2\n1 2 3 4 0.5" + b" " * 100_000 + b"\n5 6 7 8 0.25\n")
    np.testing.assert_array_equal(
        read_widerface_prediction_file(str(path)), [[1, 2, 3, 4, 0.5], [5, 6, 7, 8, 0.25]]
    )
