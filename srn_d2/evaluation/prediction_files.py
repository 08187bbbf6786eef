"""Reading and writing detection text files.

* WIDER FACE submission: one file per image, ``<dir>/<event>/<image>.txt``:
  line 1 the image name, line 2 the number of boxes, then one
  ``x y w h score`` line per box.
* FDDB detections: one file holding, for each image in turn, its path (e.g.
  ``2002/08/11/big/img_591``), the number of boxes, then the ``x y w h score`` lines.

Numbers are parsed by a vectorized numpy path for plain decimals
(``-12.5``, ``0.987654``): integer mantissa and power-of-ten exponent, divided
once, which is correctly rounded while the mantissa has at most 15 digits, so
values equal Python's ``float``. Anything else (exponents, ``nan``, longer
numbers, malformed text) goes through a line-by-line parser that raises
``ValueError`` naming the file and the line.
"""

import math
import os
import re
import warnings
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from ..errors import InputError, require
from ..utils.file_io import MAX_LINE_BYTES, atomic_write, join_inside, write_text

_NUM_FIELDS = 5
_MAX_FAST_DIGITS = 15
_POW10_INT = 10 ** np.arange(_MAX_FAST_DIGITS + 1, dtype=np.int64)
_POW10_FLOAT = 10.0 ** np.arange(_MAX_FAST_DIGITS + 1)
_MINUS, _ZERO, _NEWLINE = ord("-"), ord("0"), ord("\n")
# Byte classes of the vectorized parser; 0 = any byte it does not handle.
_OTHER, _SPACE, _DIGIT, _DOT, _SIGN = range(5)
_BYTE_CLASS = np.zeros(256, dtype=np.uint8)
_BYTE_CLASS[list(b" \t\n\r\x0b\x0c")] = _SPACE  # what bytes.split() splits on
_BYTE_CLASS[list(b"0123456789")] = _DIGIT
_BYTE_CLASS[ord(".")] = _DOT
_BYTE_CLASS[_MINUS] = _SIGN


def _parse_plain_decimals(body: bytes) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Values and line numbers (0-based, counted in ``body``) of the numbers in
    ``body``, or None when a token is not a plain decimal of <= 15 digits."""
    u = np.frombuffer(body, dtype=np.uint8)
    if u.size == 0:
        return np.zeros(0), np.zeros(0, np.int64)
    byte_class = _BYTE_CLASS[u]
    if np.any(byte_class == _OTHER):
        return None
    is_space = byte_class == _SPACE
    is_digit = byte_class == _DIGIT
    is_dot = byte_class == _DOT
    is_minus = byte_class == _SIGN
    padded = np.ones(u.size + 2, dtype=bool)
    padded[1:-1] = is_space
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[0::2], edges[1::2]
    if starts.size == 0:
        return np.zeros(0), np.zeros(0, np.int64)

    digits_before = _count_before(is_digit)
    num_digits = digits_before[ends] - digits_before[starts]
    if num_digits.min() < 1 or num_digits.max() > _MAX_FAST_DIGITS:
        return None
    negative = u[starts] == _MINUS
    if np.count_nonzero(is_minus) != np.count_nonzero(negative):
        return None  # a minus sign inside a token
    dots_before = _count_before(is_dot)
    num_dots = dots_before[ends] - dots_before[starts]
    if num_dots.max() > 1:
        return None
    fraction_digits = np.zeros(starts.size, dtype=np.int64)
    has_dot = num_dots == 1
    fraction_digits[has_dot] = ends[has_dot] - np.flatnonzero(is_dot) - 1
    # Mantissa: each digit times 10 ** (digits after it in its token); digits are in token order.
    digit_pos = np.flatnonzero(is_digit)
    digits_after = np.repeat(digits_before[ends], num_digits) - digits_before[digit_pos + 1]
    contributions = (u[digit_pos] - _ZERO) * _POW10_INT[digits_after]
    mantissa = np.add.reduceat(contributions, np.cumsum(num_digits) - num_digits)
    values = mantissa / _POW10_FLOAT[fraction_digits]
    np.negative(values, out=values, where=negative)
    lines = _count_before(u == _NEWLINE)[starts]
    return values, lines


# The fast parse holds several int64 arrays per byte of its input: it reads about 1 MB
# of whole lines at a time, so that a 10 MB file of one image needs tens of MB, not gigabytes.
_FAST_PARSE_BYTES = 1 << 20


def _parse_plain_decimals_by_pieces(body: bytes) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """:func:`_parse_plain_decimals` of ``body``, read in pieces of whole lines."""
    values, lines = [np.zeros(0)], [np.zeros(0, np.int64)]
    start, line_offset = 0, 0
    while start < len(body):
        stop = body.find(b"\n", min(start + _FAST_PARSE_BYTES, len(body)))
        stop = len(body) if stop < 0 else stop + 1
        piece = body[start:stop]
        parsed = _parse_plain_decimals(piece)
        if parsed is None:
            return None
        values.append(parsed[0])
        lines.append(parsed[1] + line_offset)
        line_offset += piece.count(b"\n")
        start = stop
    return np.concatenate(values), np.concatenate(lines)


def _count_before(mask: np.ndarray) -> np.ndarray:
    """counts[i] = number of True in mask[:i], for i = 0..len(mask)."""
    counts = np.zeros(mask.size + 1, dtype=np.int64)
    np.cumsum(mask, out=counts[1:])
    return counts


def require_valid_rows(rows: np.ndarray, source: str) -> np.ndarray:
    """``rows`` (n, 5) ``x, y, w, h, score`` if every value is finite and no width or height
    is negative, else ValueError naming ``source`` and the first bad row (counted from 1).

    One infinite score moves every other score to 0 or 1 under the WIDER FACE
    min-max normalization, a NaN box never matches, and a negative width makes a
    box whose overlaps mean nothing: all three would be scored silently.
    """
    finite = np.isfinite(rows).all(axis=-1)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise InputError(
            f"{source}: box {first + 1} is not finite: {np.asarray(rows)[first].tolist()}"
        )
    negative = (rows[:, 2] < 0) | (rows[:, 3] < 0)
    if negative.any():
        first = int(np.flatnonzero(negative)[0])
        raise InputError(
            f"{source}: box {first + 1} has a negative width or height: "
            f"{np.asarray(rows)[first].tolist()}"
        )
    return rows


def _parse_lines_slowly(body: bytes, expected: int, source: str, first_line: int) -> np.ndarray:
    rows = []
    for offset, raw in enumerate(body.split(b"\n")):
        line_no = first_line + offset
        fields = raw.split()
        if not fields:
            continue
        if len(rows) == expected:
            raise InputError(f"{source}, line {line_no}: more boxes than the declared {expected}")
        if len(fields) != _NUM_FIELDS:
            raise InputError(
                f"{source}, line {line_no}: expected 5 numbers 'x y w h score', got {len(fields)}"
            )
        text = raw.decode(errors="replace").strip()
        try:
            row = [float(f) for f in fields]
        except ValueError:
            raise InputError(f"{source}, line {line_no}: not a number in {text!r}") from None
        if not all(math.isfinite(v) for v in row):
            raise InputError(f"{source}, line {line_no}: not finite (nan or inf) in {text!r}")
        if row[2] < 0 or row[3] < 0:
            raise InputError(f"{source}, line {line_no}: negative width or height in {text!r}")
        rows.append(row)
    if len(rows) != expected:
        raise InputError(
            f"{source}, line {first_line - 1}: declares {expected} boxes, found {len(rows)}"
        )
    return np.array(rows, dtype=np.float64).reshape(-1, _NUM_FIELDS)


def _require_short_lines(body: bytes, source: str, first_line: int) -> None:
    """ValueError naming the first line of ``body`` longer than MAX_LINE_BYTES: the parsers hold
    several arrays per byte of a line (2M boxes on one line would ask for gigabytes)."""
    breaks = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == _NEWLINE)
    lengths = np.diff(np.concatenate([[-1], breaks, [len(body)]])) - 1
    if len(lengths) and lengths.max() > MAX_LINE_BYTES:
        line = int(np.argmax(lengths > MAX_LINE_BYTES))
        raise InputError(
            f"{source}, line {first_line + line}: a line of {int(lengths[line]):,} bytes; a box line "
            f"is 'x y w h score', and lines of more than {MAX_LINE_BYTES:,} bytes are refused"
        )


def parse_box_lines(body: bytes, expected: int, source: str, first_line: int) -> np.ndarray:
    """(expected, 5) array of the ``x y w h score`` lines in ``body`` (blank lines skipped).

    Args:
        source: file name used in error messages.
        first_line: 1-based line number of ``body``'s first line in that file
            (the line before it holds the box count).
    """
    _require_short_lines(body, source, first_line)
    fast = _parse_plain_decimals_by_pieces(body)
    if fast is not None:
        values, lines = fast
        if values.size == expected * _NUM_FIELDS:
            per_line = np.bincount(lines)
            if np.all((per_line == 0) | (per_line == _NUM_FIELDS)):
                rows = values.reshape(expected, _NUM_FIELDS)
                if np.isfinite(rows).all() and (rows[:, 2:4] >= 0).all():
                    return rows
    # The line by line parse names the line of any fault.
    return _parse_lines_slowly(body, expected, source, first_line)


def _parse_count(raw: bytes, source: str, line_no: int) -> int:
    try:
        count = int(raw.strip())
    except ValueError:
        raise InputError(
            f"{source}, line {line_no}: expected the number of boxes, "
            f"got {raw.decode(errors='replace')!r}"
        ) from None
    if count < 0:
        raise InputError(f"{source}, line {line_no}: negative number of boxes {count}")
    return count


def read_widerface_prediction_file(path: str) -> np.ndarray:
    """(n, 5) ``x, y, w, h, score`` of one WIDER FACE submission file."""
    with open(path, "rb") as f:
        data = f.read()
    first = data.find(b"\n")
    second = data.find(b"\n", first + 1) if first >= 0 else -1
    if second < 0:
        count_line = data[first + 1 :] if first >= 0 else b""
        if first < 0 or not count_line.strip():
            raise InputError(f"{path}, line {1 if first < 0 else 2}: missing the number of boxes")
        second = len(data)
    count = _parse_count(data[first + 1 : second], path, 2)
    return parse_box_lines(data[second + 1 :], count, path, 3)


def list_prediction_ids(pred_dir: str) -> List[str]:
    """``"<event>/<image>"`` of every ``<event>/<image>.txt`` under ``pred_dir``, sorted."""
    return sorted(
        f"{event}/{name[:-4]}"
        for event in os.listdir(pred_dir)
        if os.path.isdir(os.path.join(pred_dir, event))
        for name in os.listdir(os.path.join(pred_dir, event))
        if name.endswith(".txt")
    )


def read_widerface_predictions(
    pred_dir: str, image_ids: Optional[Iterable[str]] = None
) -> Dict[str, np.ndarray]:
    """Predictions of a submission folder, keyed by ``"<event>/<image>"``.

    With ``image_ids`` (the ground truth's images), only those files are read and
    a missing file means no predictions for that image (one warning counts them).
    Without, every ``<event>/<image>.txt`` under ``pred_dir`` is read.
    """
    if image_ids is None:
        image_ids = list_prediction_ids(pred_dir)
    predictions, missing = {}, []
    for image_id in image_ids:
        path = os.path.join(pred_dir, image_id + ".txt")
        try:
            predictions[image_id] = read_widerface_prediction_file(path)
        except FileNotFoundError:
            missing.append(image_id)
    if missing:
        warnings.warn(
            f"{pred_dir}: no prediction file for {len(missing)} image(s), counted as no "
            f"predictions, e.g. {', '.join(missing[:3])}",
            stacklevel=2,
        )
    return predictions


# "precise": the model's values to 0.01 px and 1e-6; "released": the authors' files.
SUBMISSION_FORMATS = ("precise", "released")
# Python's repr of a float rounded to 3 decimals: no trailing zeros, but one digit after the point.
_TRAILING_ZEROS = re.compile(r"(\.\d*[1-9])0+$", re.MULTILINE)
_ALL_ZERO_DECIMALS = re.compile(r"\.000$", re.MULTILINE)


def _format_boxes(boxes: np.ndarray) -> str:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, _NUM_FIELDS)
    return ("%.2f %.2f %.2f %.2f %.6f\n" * len(boxes)) % tuple(boxes.ravel().tolist())


def _format_scores_3(scores: np.ndarray) -> str:
    """One line per score, as ``str(round(score, 3))`` writes it.

    ``%.3f`` rounds the exact binary value correctly (ties to even), as
    ``round(x, 3)`` does; only the trailing zeros differ, and are removed.
    """
    text = ("%.3f\n" * len(scores)) % tuple(np.asarray(scores, dtype=np.float64).tolist())
    return _ALL_ZERO_DECIMALS.sub(".0", _TRAILING_ZEROS.sub(r"\1", text))


def released_submission_rows(xywhs: np.ndarray) -> np.ndarray:
    """(n, 5) ``x, y, w, h, score`` as the authors' writer put them in a submission file.

    x and y rounded to integers, the box's pixel extent ``w + 1`` and ``h + 1``
    (its boxes are inclusive pixel indices) rounded to integers, the score
    rounded to 3 decimals; integer rounding is Python's, ties to even.
    """
    rows = np.asarray(xywhs, dtype=np.float64).reshape(-1, _NUM_FIELDS)
    released = np.empty_like(rows)
    released[:, :2] = np.rint(rows[:, :2])
    released[:, 2:4] = np.rint(rows[:, 2:4] + 1)
    released[:, 4] = np.array(_format_scores_3(rows[:, 4]).split(), dtype=np.float64)
    return released


def _format_released(rows: np.ndarray) -> str:
    """Lines of rows already passed through :func:`released_submission_rows`."""
    fields = np.empty(rows.shape, dtype=object)
    fields[:, :4] = rows[:, :4].astype(np.int64)
    fields[:, 4] = _format_scores_3(rows[:, 4]).splitlines()
    return ("%d %d %d %d %s\n" * len(rows)) % tuple(fields.ravel().tolist())


def require_submission_format(submission_format: str) -> str:
    """``submission_format`` if it is one of :data:`SUBMISSION_FORMATS`; else ConfigValueError."""
    require(
        submission_format in SUBMISSION_FORMATS,
        "TEST.WIDERFACE_SUBMISSION_FORMAT",
        submission_format,
        f"must be one of {SUBMISSION_FORMATS}",
    )
    return submission_format


def write_widerface_predictions(
    pred_dir: str, predictions: Mapping[str, np.ndarray], submission_format: str = "precise"
) -> None:
    """Write ``<pred_dir>/<image id>.txt`` per image; an id that would write outside
    ``pred_dir`` (absolute, "..", a link out) is a ValueError.

    Args:
        predictions: image id -> (n, 5) ``x, y, w, h, score``.
        submission_format: "precise" (x, y, w, h to 0.01 px, scores to 1e-6) or
            "released" (:func:`released_submission_rows`, written as the authors did).
    """
    require_submission_format(submission_format)
    for image_id, boxes in predictions.items():
        path = join_inside(pred_dir, image_id + ".txt")
        boxes = np.asarray(boxes).reshape(-1, _NUM_FIELDS)
        if submission_format == "released":
            lines = _format_released(released_submission_rows(boxes))
        else:
            lines = _format_boxes(boxes)
        write_text(path, f"{os.path.basename(image_id)}\n{len(boxes)}\n{lines}")


def read_fddb_detections(path: str) -> Dict[str, np.ndarray]:
    """FDDB detection file -> image path -> (n, 5) ``x, y, w, h, score``."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    detections = {}
    i = 0
    while i < len(lines):
        try:
            name = lines[i].strip().decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{path}, line {i + 1}: not UTF-8 text") from None
        if not name:
            i += 1
            continue
        if _looks_like_box(name):
            raise InputError(
                f"{path}, line {i + 1}: a box line {name!r} where an image path belongs: "
                "the count of the image before says fewer boxes than it has"
            )
        if i + 1 >= len(lines):
            raise InputError(f"{path}, line {i + 2}: missing the number of boxes of {name}")
        count = _parse_count(lines[i + 1], path, i + 2)
        body_lines = lines[i + 2 : i + 2 + count]
        if len(body_lines) < count:
            raise InputError(
                f"{path}, line {i + 2}: {name} declares {count} boxes, file ends first"
            )
        if name in detections:
            raise InputError(f"{path}, line {i + 1}: {name} appears twice")
        detections[name] = parse_box_lines(b"\n".join(body_lines), count, path, i + 3)
        i += 2 + count
    return detections


def _looks_like_box(text: str) -> bool:
    fields = text.split()
    if len(fields) != _NUM_FIELDS:
        return False
    try:
        [float(f) for f in fields]
    except ValueError:
        return False
    return True


def write_fddb_detections(path: str, detections: Mapping[str, np.ndarray]) -> None:
    with atomic_write(path) as f:
        for name, boxes in detections.items():
            boxes = np.asarray(boxes).reshape(-1, _NUM_FIELDS)
            f.write(f"{name}\n{len(boxes)}\n{_format_boxes(boxes)}")
