"""AFW and PASCAL faces: the protocol face papers score them with (numpy only).

SRN, S3FD, FaceBoxes, PyramidBox and DSFD report AP on these sets with the
evaluation toolbox of Mathias et al., "Face detection without bells and
whistles" (ECCV 2014), on its cleaned re-annotations. This module restates
that toolbox's rules; a number computed here is comparable with theirs.

The ground truth files are read by :mod:`srn_d2.annotations.face_benchmarks`.

The protocol:

* a face counts unless flagged ignore, or narrower or shorter than
  :data:`MIN_FACE_SIDE` (30 px, sides measured as ``x2 - x1`` and ``y2 - y1``);
* detections whose width and height are both at most :data:`MIN_DETECTION_SIDE`
  (``int(sqrt(0.5 * 30 * 30))`` = 21 px) are dropped before anything else;
* detections are taken by descending score (equal scores keep file order);
  each goes to the face of highest overlap in its image (of equal overlaps,
  the last face). The overlap is the toolbox's: areas and intersections count
  pixels inclusively (``x2 - x1 + 1``), and boxes that only touch do not
  intersect. A detection is a true positive when that overlap exceeds 0.5
  (strictly) and the face counts and was not found before; it is ignored
  (neither true nor false positive) when the face does not count; anything
  else is a false positive, a second detection of a found face included;
* AP is VOC's all-point AP of the resulting precision-recall curve;
* calibration (:func:`calibrated_matches`, 5 iterations by default): the mean
  offset of the true positives' centres from their faces' (in units of the
  detection's size) and the mean ratio of the faces' sizes to theirs are
  applied to every detection, iteration after iteration, so that a detector
  is not penalized for drawing its boxes in another annotation style. As in
  the toolbox, the reported matching is the one of the last iteration, made
  before that iteration's correction is applied.
"""

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from ..annotations.face_benchmarks import MIN_FACE_SIDE, FaceBenchmarkGroundTruth, image_key
from ..errors import InputError
from ..utils.file_io import atomic_write
from .widerface_protocol import voc_ap

__all__ = [
    "MIN_DETECTION_SIDE",
    "CALIBRATION_ITERATIONS",
    "BenchmarkDetections",
    "BenchmarkMatches",
    "read_benchmark_detections",
    "toolbox_overlaps",
    "toolbox_overlaps_pairwise",
    "match_detections",
    "calibrated_matches",
    "evaluate_benchmark",
    "write_benchmark_detections",
]

MIN_DETECTION_SIDE = int(np.sqrt(0.5 * MIN_FACE_SIDE * MIN_FACE_SIDE))
CALIBRATION_ITERATIONS = 5
IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class BenchmarkDetections:
    """Detections in the toolbox's order (descending score, equal scores in file order).

    Attributes:
        image: (D,) index of each detection's image in the ground truth.
        scores: (D,); boxes: (D, 4) ``x1, y1, x2, y2``.
    """

    image: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    @classmethod
    def sorted(cls, image, scores, boxes) -> "BenchmarkDetections":
        order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
        return cls(
            np.asarray(image)[order],
            np.asarray(scores, np.float64)[order],
            np.asarray(boxes, np.float64).reshape(-1, 4)[order],
        )

    def without_small(self) -> Tuple["BenchmarkDetections", int]:
        """Without the detections whose width and height are both at most MIN_DETECTION_SIDE;
        and how many those were."""
        sides = self.boxes[:, 2:] - self.boxes[:, :2]
        keep = (sides > MIN_DETECTION_SIDE).any(axis=1)
        return BenchmarkDetections(self.image[keep], self.scores[keep], self.boxes[keep]), int(
            (~keep).sum()
        )


def read_benchmark_detections(path: str, gt: FaceBenchmarkGroundTruth) -> BenchmarkDetections:
    """A detection file in the toolbox's format: a line per detection, ``image score x1 y1 x2 y2``,
    the image with or without its extension. ValueError naming the file and line of a line that
    does not parse, a non-finite value, x2 < x1 or y2 < y1, or an image not in ``gt``."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InputError(f"{path}, line {line}: not UTF-8 text") from None
    index_of = {key: i for i, key in enumerate(gt.keys)}
    images, rows = [], []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise InputError(
                f"{path}, line {number}: expected 'image score x1 y1 x2 y2', got {len(fields)} fields"
            )
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise InputError(f"{path}, line {number}: not a number in {line.strip()!r}") from None
        if not np.isfinite(values).all():
            raise InputError(f"{path}, line {number}: not finite (nan or inf) in {line.strip()!r}")
        if values[3] < values[1] or values[4] < values[2]:
            raise InputError(f"{path}, line {number}: x2 < x1 or y2 < y1 in {line.strip()!r}")
        key = image_key(fields[0])
        if key not in index_of:
            raise InputError(
                f"{path}, line {number}: image {fields[0]!r} is not in the ground truth"
            )
        images.append(index_of[key])
        rows.append(values)
    rows = np.asarray(rows, np.float64).reshape(-1, 5)
    return BenchmarkDetections.sorted(np.asarray(images, np.int64), rows[:, 0], rows[:, 1:])


def toolbox_overlaps(detections: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(n, m) overlaps of ``x1 y1 x2 y2`` boxes as the toolbox computes them (module docstring)."""
    return toolbox_overlaps_pairwise(
        np.asarray(detections, np.float64).reshape(-1, 1, 4),
        np.asarray(faces, np.float64).reshape(1, -1, 4),
    )


def toolbox_overlaps_pairwise(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The toolbox's overlap of ``x1 y1 x2 y2`` boxes (..., 4) and (..., 4), broadcast."""
    area_d = (np.abs(d[..., 2] - d[..., 0]) + 1) * (np.abs(d[..., 3] - d[..., 1]) + 1)
    area_g = (np.abs(g[..., 2] - g[..., 0]) + 1) * (np.abs(g[..., 3] - g[..., 1]) + 1)
    touching = (
        (d[..., 3] > g[..., 1])
        & (g[..., 3] > d[..., 1])
        & (d[..., 2] > g[..., 0])
        & (g[..., 2] > d[..., 0])
    )
    inter_w = np.minimum(d[..., 2], g[..., 2]) - np.maximum(d[..., 0], g[..., 0]) + 1
    inter_h = np.minimum(d[..., 3], g[..., 3]) - np.maximum(d[..., 1], g[..., 1]) + 1
    inter = np.where(touching, inter_w * inter_h, 0.0)
    return inter / (area_d + area_g - inter)


@dataclass(frozen=True)
class BenchmarkMatches:
    """The toolbox's verdict on each detection (in the detections' order).

    Attributes:
        true_positive, false_positive: (D,) bool; both False for a match to an ignored face.
        face: (D,) the face (index into gt.boxes) each detection went to, -1 for none.
        num_faces: faces that count.
    """

    true_positive: np.ndarray
    false_positive: np.ndarray
    face: np.ndarray
    num_faces: int

    def pr_curve(self) -> Tuple[np.ndarray, np.ndarray]:
        """Recall and precision after each detection that counts either way."""
        counted = self.true_positive | self.false_positive
        tp = np.cumsum(self.true_positive[counted])
        fp = np.cumsum(self.false_positive[counted])
        return tp / max(self.num_faces, 1), tp / np.maximum(tp + fp, 1)

    @property
    def ap(self) -> float:
        return voc_ap(*self.pr_curve())


def match_detections(
    detections: BenchmarkDetections, gt: FaceBenchmarkGroundTruth
) -> BenchmarkMatches:
    """The toolbox's matching (module docstring): each detection against the faces of its image."""
    ignored = gt.ignored
    num = len(detections.scores)
    if gt.num_faces == 0 or num == 0:
        face = np.full(num, -1, dtype=np.int64)
        return BenchmarkMatches(
            np.zeros(num, bool), np.ones(num, bool), face, int((~ignored).sum())
        )
    best_overlap, face = _best_faces(detections, gt)
    hit = best_overlap > IOU_THRESHOLD
    counts = hit & ~ignored[face]
    true_positive = np.zeros(num, dtype=bool)
    hits = np.flatnonzero(counts)
    # The first hit of each face in score order finds it; later ones are false positives.
    _, first_hit = np.unique(face[hits], return_index=True)
    true_positive[hits[first_hit]] = True
    false_positive = ~hit | (counts & ~true_positive)
    return BenchmarkMatches(
        true_positive, false_positive, np.where(hit, face, -1), int((~ignored).sum())
    )


# At most this many (detection, face) overlaps are held at once.
MAX_PAIRS = 1 << 16


def _best_faces(
    detections: BenchmarkDetections, gt: FaceBenchmarkGroundTruth
) -> Tuple[np.ndarray, np.ndarray]:
    """(D,) each detection's best overlap with the faces of its image (-1 with none) and that face
    (0 with none); of equal overlaps the last face, as the toolbox's ``>=`` keeps it.

    Each detection meets only its own image's faces, in slices of at most :data:`MAX_PAIRS` pairs:
    memory grows with the pairs there are, not with the detections times the most crowded image.
    """
    num = len(detections.scores)
    best_overlap, face = np.full(num, -1.0), np.zeros(num, dtype=np.int64)
    pairs = np.diff(gt.offsets)[detections.image]
    ends = np.cumsum(pairs)
    start = 0
    while start < num:
        done = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, done + MAX_PAIRS, side="right")))
        counts = pairs[start:stop]
        detection = np.repeat(np.arange(start, stop), counts)
        slot = np.arange(len(detection)) - np.repeat(np.cumsum(counts) - counts, counts)
        candidate = gt.offsets[detections.image[detection]] + slot
        overlaps = toolbox_overlaps_pairwise(detections.boxes[detection], gt.boxes[candidate])
        # Grouped by detection, ascending overlap then face: each group's last pair is its answer.
        order = np.lexsort((slot, overlaps, detection))
        last = (
            order[np.r_[np.flatnonzero(np.diff(detection[order])), len(order) - 1]]
            if len(order)
            else order
        )
        best_overlap[detection[last]] = overlaps[last]
        face[detection[last]] = candidate[last]
        start = stop
    return best_overlap, face


def _calibration(
    detections: BenchmarkDetections, matches: BenchmarkMatches, gt: FaceBenchmarkGroundTruth
) -> Optional[np.ndarray]:
    """Mean (tx, ty, sx, sy) of the true positives: centre offsets in units of the detection's
    size and size ratios face / detection; None without true positives."""
    if not matches.true_positive.any():
        return None
    det = detections.boxes[matches.true_positive]
    face = gt.boxes[matches.face[matches.true_positive]]
    det_size, face_size = det[:, 2:] - det[:, :2], face[:, 2:] - face[:, :2]
    det_centre, face_centre = (det[:, 2:] + det[:, :2]) / 2, (face[:, 2:] + face[:, :2]) / 2
    return np.concatenate(
        [((face_centre - det_centre) / det_size).mean(0), (face_size / det_size).mean(0)]
    )


def _corrected(detections: BenchmarkDetections, correction: np.ndarray) -> BenchmarkDetections:
    """Each box moved by (tx, ty) times its size and scaled by (sx, sy) about its centre."""
    shift, scale = correction[:2], correction[2:]
    half = (detections.boxes[:, 2:] - detections.boxes[:, :2]) / 2
    centre = (detections.boxes[:, 2:] + detections.boxes[:, :2]) / 2 + shift * half * 2
    return BenchmarkDetections(
        detections.image,
        detections.scores,
        np.concatenate([centre - half * scale, centre + half * scale], axis=1),
    )


def calibrated_matches(
    detections: BenchmarkDetections,
    gt: FaceBenchmarkGroundTruth,
    iterations: int = CALIBRATION_ITERATIONS,
) -> Tuple[BenchmarkMatches, np.ndarray]:
    """The matching after the toolbox's calibration, and the total correction applied
    before it (tx, ty summed, sx, sy multiplied)."""
    return _calibrate(detections, gt, iterations, match_detections(detections, gt))


def _calibrate(
    detections: BenchmarkDetections,
    gt: FaceBenchmarkGroundTruth,
    iterations: int,
    matches: BenchmarkMatches,
) -> Tuple[BenchmarkMatches, np.ndarray]:
    """:func:`calibrated_matches`, from ``matches``, the uncorrected detections' matching.

    The toolbox matches ``iterations`` times and corrects between matchings, so the
    last matching it reports follows ``iterations - 1`` corrections.
    """
    total = np.array([0.0, 0.0, 1.0, 1.0])
    for _ in range(iterations - 1):
        correction = _calibration(detections, matches, gt)
        if correction is None:
            break
        detections = _corrected(detections, correction)
        total = np.concatenate([total[:2] + correction[:2], total[2:] * correction[2:]])
        matches = match_detections(detections, gt)
    return matches, total


def evaluate_benchmark(
    detections: BenchmarkDetections,
    gt: FaceBenchmarkGroundTruth,
    iterations: int = CALIBRATION_ITERATIONS,
) -> Dict[str, object]:
    """AP without and with calibration, the PR curves and counts; small detections dropped first."""
    kept, dropped = detections.without_small()
    plain = match_detections(kept, gt)
    calibrated, correction = _calibrate(kept, gt, iterations, plain)
    return {
        "AP": plain.ap,
        "AP_calibrated": calibrated.ap,
        "matches": plain,
        "matches_calibrated": calibrated,
        "correction": correction,
        "dropped_small": dropped,
        "num_detections": len(kept.scores),
    }


def write_benchmark_detections(path: str, detections: Mapping[str, np.ndarray]) -> None:
    """Write the toolbox's format: ``image score x1 y1 x2 y2`` per line.

    Args:
        detections: image name -> (n, 5) ``x1, y1, x2, y2, score``.
    """
    with atomic_write(path) as f:
        for name, rows in detections.items():
            for x1, y1, x2, y2, score in np.asarray(rows, np.float64).reshape(-1, 5):
                f.write(f"{name} {score:.6f} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f}\n")
