"""Reader for the "image path, count, then count records" text format shared by
WIDER FACE (``wider_face_*_bbx_gt.txt``) and FDDB (``FDDB-fold-NN-ellipseList.txt``).
"""

import itertools
from dataclasses import dataclass
from typing import List

import numpy as np

from ..errors import InputError, require_unique_images
from ..utils.file_io import MAX_LINE_BYTES
from ..utils.image_checks import MAX_COORDINATE


@dataclass(frozen=True)
class CountedRecords:
    """The records of a file, concatenated in file order.

    ``records[offsets[i]:offsets[i] + counts[i]]`` belong to ``names[i]``.
    """

    names: List[str]
    name_lines: List[int]  # 1-based line number of each image path
    counts: np.ndarray  # (num_images,) int64
    records: np.ndarray  # (num_records, num_fields) float64, all finite
    record_lines: np.ndarray  # (num_records,) 1-based line number of each record

    @property
    def offsets(self) -> np.ndarray:
        return np.cumsum(self.counts) - self.counts

    @property
    def image_index(self) -> np.ndarray:
        """For every record, the index of the image it belongs to."""
        return np.repeat(np.arange(len(self.names)), self.counts)


def read_counted_records(
    path: str, num_fields: int, *, zero_count_placeholder: bool
) -> CountedRecords:
    """Parse ``path``; raise ValueError naming the file and 1-based line of any malformation.

    The file is UTF-8 text (a leading byte-order mark is not part of the first
    line); numbers must be finite.

    Args:
        num_fields: number of whitespace-separated numbers on every record line.
        zero_count_placeholder: a count of 0 may be followed by one placeholder
            record line of zeros (WIDER FACE writes ``0 0 0 0 0 0 0 0 0 0``); it
            is skipped. Any other record line after a count of 0 is an error,
            since it would otherwise be read as the next image's path or lost.
    """
    lines = read_text_lines(path)
    if not any(line.strip() for line in lines):
        raise InputError(f"{path}: lists no image (the file is empty or blank)")
    names, counts, starts = [], [], []
    try:
        _index_images(path, lines, num_fields, zero_count_placeholder, names, counts, starts)
    except ValueError:
        # A count that is too large swallows the next image's path as a record;
        # that earlier line is the one to report.
        record_text, record_lines = _record_lines(lines, counts, starts)
        raise_first_bad_record(path, record_text, record_lines, num_fields)
        raise

    record_text, record_lines = _record_lines(lines, counts, starts)
    records = parse_records(path, record_text, record_lines, num_fields)
    name_lines = [start - 1 for start in starts]
    require_unique_images(names, [f"{path}:{line}" for line in name_lines])
    return CountedRecords(
        names, name_lines, np.asarray(counts, dtype=np.int64), records, record_lines
    )


def read_text_lines(path: str) -> List[str]:
    """The lines of a UTF-8 text file (byte-order mark and trailing blank lines removed);
    ValueError naming the file and line if it is not UTF-8 or a line is longer than
    :data:`MAX_LINE_BYTES`. Memory grows with the file, never with its longest line squared."""
    lines: List[str] = []
    with open(path, "rb") as f:
        for number in itertools.count(1):
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            if len(raw) > MAX_LINE_BYTES:
                raise InputError(
                    f"{path}:{number}: a line of more than {MAX_LINE_BYTES:,} bytes; annotation "
                    "lines are an image path or a face's numbers"
                )
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise InputError(
                    f"{path}:{number}: not UTF-8 text ({error.reason} at byte {error.start} of the "
                    "line)"
                ) from None
            # As str.splitlines of the whole text: other line breaks (\r, \x0b, ...) split too.
            lines.extend(text.splitlines() or [""])
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _index_images(path, lines, num_fields, zero_count_placeholder, names, counts, starts):
    """Append each image's path, record count and first record line (0-based) to the lists."""
    line_index = 0
    num_lines = len(lines)
    # The walk is per image (12,880 for WIDER train); record lines are parsed in one block.
    while line_index < num_lines:
        name = lines[line_index].strip()
        if not name:
            raise InputError(f"{path}:{line_index + 1}: expected an image path, got a blank line")
        if line_index + 1 >= num_lines:
            raise InputError(
                f"{path}:{line_index + 2}: file is truncated: no record count after "
                f"image path {name!r}"
            )
        count = _parse_count(path, line_index + 2, lines[line_index + 1])
        start = line_index + 2
        stop = start + count
        if stop > num_lines:
            raise InputError(
                f"{path}:{num_lines + 1}: file is truncated: the count {count} at line "
                f"{line_index + 2} needs records on lines {start + 1}-{stop}, "
                f"but the file has {num_lines} lines"
            )
        if count == 0 and zero_count_placeholder and start < num_lines:
            stop += _placeholder_length(path, start + 1, lines[start], num_fields)
        names.append(name)
        counts.append(count)
        starts.append(start)
        line_index = stop


def _placeholder_length(path: str, line_number: int, text: str, num_fields: int) -> int:
    """1 if ``text`` (the line after a count of 0) is the all-zero placeholder, 0 if it is
    the next image's path; an error if it is a record, which the count of 0 would lose."""
    tokens = text.split()
    if len(tokens) != num_fields:
        return 0
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        return 0
    if any(values):
        raise InputError(
            f"{path}:{line_number}: a record follows a count of 0 (line {line_number - 1}); "
            "fix the count, or make the line the all-zero placeholder"
        )
    return 1


def _record_lines(lines, counts, starts):
    """The record lines' text, and their 1-based line numbers."""
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    offsets = np.cumsum(counts) - counts
    record_numbers = np.repeat(starts - offsets, counts) + np.arange(int(counts.sum())) + 1
    record_text = list(
        itertools.chain.from_iterable(
            lines[s : s + c] for s, c in zip(starts.tolist(), counts.tolist())
        )
    )
    return record_text, record_numbers


def _parse_count(path: str, line_number: int, text: str) -> int:
    token = text.strip()
    if token.isdigit():
        return int(token)
    if token.startswith("-") and token[1:].isdigit():
        raise InputError(f"{path}:{line_number}: negative record count {token!r}")
    raise InputError(f"{path}:{line_number}: expected an integer record count, got {token!r}")


def parse_records(path, record_text, record_lines, num_fields) -> np.ndarray:
    """(len(record_text), num_fields) float64 array of the record lines, parsed in one block;
    ValueError naming ``path`` and the 1-based line of the first malformed or non-finite record."""
    if not record_text:
        return np.zeros((0, num_fields), dtype=np.float64)
    try:
        # comments=None: a "#" must be reported as malformed, not silently dropped.
        records = np.loadtxt(record_text, dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        records = None
    if records is None or records.shape != (len(record_text), num_fields):
        raise_first_bad_record(path, record_text, record_lines, num_fields)
        raise InputError(f"{path}: could not parse the records")
    finite = np.isfinite(records).all(axis=1)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise InputError(
            f"{path}:{int(record_lines[first])}: non-finite number (nan or inf) in {shown(record_text[first])}"
        )
    beyond = (np.abs(records) > MAX_COORDINATE).any(axis=1)
    if beyond.any():
        first = int(np.flatnonzero(beyond)[0])
        raise InputError(
            f"{path}:{int(record_lines[first])}: a number beyond any image (more than {MAX_COORDINATE:,.0f} px) in "
            f"{shown(record_text[first])}"
        )
    return records


def raise_first_bad_record(path, record_text, record_lines, num_fields):
    """Raise ValueError for the first malformed record line, if any.

    Only reached on malformed input, where a per-line scan is affordable. Each line is parsed as
    the block is (``np.loadtxt``), so that what failed there is found here ("1_0", which Python's
    float() takes, included).
    """
    for text, line_number in zip(record_text, record_lines):
        tokens = text.split()
        if len(tokens) != num_fields:
            raise InputError(
                f"{path}:{line_number}: expected {num_fields} numbers, "
                f"got {len(tokens)}: {shown(text)}"
            )
        try:
            np.loadtxt([text], dtype=np.float64, ndmin=2, comments=None)
        except ValueError:
            raise InputError(f"{path}:{line_number}: non-numeric field in {shown(text)}") from None


def shown(text: str, limit: int = 120) -> str:
    """A line quoted in an error message: stripped, and cut to ``limit`` characters."""
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")
