"""FDDB discrete-score ROC, following the official ``evaluate`` tool (Jain and
Learned-Miller; ``evaluate.cpp``, ``Matching.cpp``, ``Results.cpp``).

Overlap of an annotated ellipse and a detected rectangle: pixels of their
intersection over pixels of their union, both regions rasterized on the image
grid and clipped to the image when its size is known. As in the tool, the
ellipse is drawn around the rounded center with its semi-axes truncated to
integers and rotated by its angle; the rectangle covers the pixels from
``round(x), round(y)`` to ``round(x + w), round(y + h)`` inclusive. The tool
fills OpenCV's polygonal approximation of the ellipse; here a pixel belongs to
the ellipse when its center satisfies the ellipse equation, which can differ
on boundary pixels only. Intersections come from a summed-area table of each
ellipse's mask, so all detections of an image are measured at once.

Matching, per image and per distinct detection score ``s`` (descending): the
detections scoring >= s are matched one-to-one to the annotations by a
maximum-total-overlap assignment (Hungarian; ``scipy.optimize.linear_sum_assignment``);
a matched pair with overlap > 0.5 is a true positive (discrete score 1), every
other detection scoring >= s a false positive. The assignment is recomputed
only where it can change: at the scores of detections that rank among the m
best of the detections so far for some annotation (m = annotations in the
image). Where several assignments reach the same total, the tool's Hungarian
code and scipy may pick different ones. Summed over images at every distinct
score, this gives the ROC: true positive rate (true positives / annotated faces)
against the number of false positives. "TPR at 1000 FP" is the highest true
positive rate among the ROC points with at most 1000 false positives.
"""

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from .prediction_files import require_valid_rows

MATCH_OVERLAP = 0.5


def _round_like_opencv(values: np.ndarray) -> np.ndarray:
    # cvPointFrom32f: float32 coordinates, rounded half to even.
    return np.rint(np.asarray(values, dtype=np.float32)).astype(np.int64)


def rasterize_ellipse(
    ellipse, image_size: Optional[Tuple[int, int]] = None
) -> Tuple[int, int, np.ndarray]:
    """Mask of an ellipse ``(ra, rb, theta, cx, cy)`` (theta in radians, the
    angle of the ``ra`` axis from the x axis, y pointing down).

    Returns:
        (x0, y0, mask): mask[j, i] is pixel (x0 + i, y0 + j).
    """
    ra, rb, theta, cx, cy = (float(v) for v in ellipse[:5])
    # A zero semi-axis still draws a one-pixel-wide line.
    a, b = max(int(ra), 0.5), max(int(rb), 0.5)
    center_x, center_y = _round_like_opencv([cx, cy])
    cos, sin = math.cos(theta), math.sin(theta)
    half_w = math.ceil(math.hypot(a * cos, b * sin))
    half_h = math.ceil(math.hypot(a * sin, b * cos))
    x0, x1 = center_x - half_w, center_x + half_w
    y0, y1 = center_y - half_h, center_y + half_h
    if image_size is not None:
        height, width = image_size
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, width - 1), min(y1, height - 1)
    if x1 < x0 or y1 < y0:
        return int(x0), int(y0), np.zeros((0, 0), dtype=bool)
    dx = np.arange(x0, x1 + 1, dtype=np.float64) - center_x
    dy = np.arange(y0, y1 + 1, dtype=np.float64)[:, None] - center_y
    u = dx * cos + dy * sin
    v = dy * cos - dx * sin
    return int(x0), int(y0), (u / a) ** 2 + (v / b) ** 2 <= 1


def rectangle_pixels(boxes_xywh: np.ndarray, image_size: Optional[Tuple[int, int]] = None):
    """Inclusive pixel ranges (x1, y1, x2, y2) of rectangles ``x, y, w, h``; empty
    ranges (after clipping to the image) have x2 < x1 or y2 < y1."""
    boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    corners_a = _round_like_opencv(boxes[:, :2])
    corners_b = _round_like_opencv(boxes[:, :2] + boxes[:, 2:4])
    low, high = np.minimum(corners_a, corners_b), np.maximum(corners_a, corners_b)
    if image_size is not None:
        height, width = image_size
        low = np.maximum(low, 0)
        high = np.minimum(high, [width - 1, height - 1])
    return low[:, 0], low[:, 1], high[:, 0], high[:, 1]


def ellipse_box_overlaps(
    ellipses: np.ndarray, boxes_xywh: np.ndarray, image_size: Optional[Tuple[int, int]] = None
) -> np.ndarray:
    """(m, n) pixel intersection over union of m ellipses and n rectangles."""
    ellipses = np.asarray(ellipses, dtype=np.float64).reshape(-1, 5)
    x1, y1, x2, y2 = rectangle_pixels(boxes_xywh, image_size)
    rect_area = np.clip(x2 - x1 + 1, 0, None) * np.clip(y2 - y1 + 1, 0, None)
    overlaps = np.zeros((len(ellipses), len(x1)))
    for row, ellipse in enumerate(ellipses):
        ex0, ey0, mask = rasterize_ellipse(ellipse, image_size)
        table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
        table[1:, 1:] = mask.cumsum(0).cumsum(1)
        # Rectangle ranges in the mask's half-open coordinates, clipped to it.
        c0 = np.clip(x1 - ex0, 0, mask.shape[1])
        c1 = np.clip(x2 - ex0 + 1, c0, mask.shape[1])
        r0 = np.clip(y1 - ey0, 0, mask.shape[0])
        r1 = np.clip(y2 - ey0 + 1, r0, mask.shape[0])
        inter = table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]
        union = table[-1, -1] + rect_area - inter
        overlaps[row] = np.divide(inter, union, out=np.zeros(len(x1)), where=union > 0)
    return overlaps


def true_positive_steps(overlaps: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """One image's discrete true positives as a step function of the score threshold.

    Returns:
        (thresholds, true_positives): distinct scores (descending) of detections
        overlapping some annotation, and the true-positive count with every
        detection scoring >= that threshold.
    """
    relevant = np.flatnonzero((overlaps > 0).any(axis=0))
    if relevant.size == 0:
        return np.zeros(0), np.zeros(0, np.int64)
    order = relevant[np.argsort(-scores[relevant], kind="stable")]
    sorted_scores = scores[order]
    ordered = np.ascontiguousarray(overlaps[:, order])
    # Last position of each run of equal scores: detections tied at s enter together.
    group_ends = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True)) + 1
    changes = np.add.reduceat(_enters_top_candidates(ordered), np.append(0, group_ends[:-1])) > 0
    counts = np.zeros(len(group_ends), dtype=np.int64)
    for i, end in enumerate(group_ends):
        if not changes[i]:
            counts[i] = counts[i - 1]
            continue
        block = ordered[:, :end]
        rows, cols = linear_sum_assignment(block, maximize=True)
        counts[i] = np.count_nonzero(block[rows, cols] > MATCH_OVERLAP)
    return sorted_scores[group_ends - 1], counts


def _enters_top_candidates(ordered: np.ndarray) -> np.ndarray:
    """Whether detection j (columns in score order) is among the m best of detections
    0..j for some annotation (m = number of annotations).

    A detection that is not is never needed by a maximum assignment: each
    annotation it could take has m strictly better earlier detections, one of
    them left free by the other m - 1 annotations. Adding it leaves the optimum
    unchanged, so the assignment is only recomputed when this is True.
    """
    num_annots, num_dets = ordered.shape
    earlier = np.tri(num_dets, num_dets, -1, dtype=bool)  # earlier[j, i]: i < j
    better_earlier = ((ordered[:, None, :] > ordered[:, :, None]) & earlier).sum(axis=2)
    return ((better_earlier < num_annots) & (ordered > 0)).any(axis=0)


@dataclass(frozen=True)
class FDDBRoc:
    """Discrete-score ROC: one point per distinct detection score (descending)."""

    thresholds: np.ndarray
    true_positives: np.ndarray
    false_positives: np.ndarray
    num_faces: int

    @property
    def true_positive_rate(self) -> np.ndarray:
        """Per point; NaN (undefined, not 0) when the ground truth holds no face."""
        if self.num_faces == 0:
            return np.full(len(self.true_positives), np.nan)
        return self.true_positives / self.num_faces

    def tpr_at_false_positives(self, max_false_positives: int = 1000) -> float:
        """Highest true positive rate among the points with <= max_false_positives; NaN without faces."""
        if self.num_faces == 0:
            return float("nan")
        allowed = self.false_positives <= max_false_positives
        return float(self.true_positive_rate[allowed].max()) if allowed.any() else 0.0


def evaluate_fddb(
    detections: Mapping[str, np.ndarray],
    ground_truth: Mapping[str, Tuple[np.ndarray, Optional[Tuple[int, int]]]],
) -> FDDBRoc:
    """ROC of detections against ellipse annotations.

    Args:
        detections: image path -> (n, 5) ``x, y, w, h, score``; images without
            an entry have no detections; entries outside ``ground_truth`` are ignored.
        ground_truth: image path -> ((m, 5) ellipses ``ra, rb, theta, cx, cy``,
            (height, width) or None when the image size is unknown).
    """
    all_scores, step_scores, step_deltas = [], [], []
    num_faces = 0
    for name, (ellipses, image_size) in ground_truth.items():
        ellipses = np.asarray(ellipses, dtype=np.float64).reshape(-1, 5)
        num_faces += len(ellipses)
        dets = np.asarray(detections.get(name, np.zeros((0, 5))), dtype=np.float64).reshape(-1, 5)
        require_valid_rows(dets, f"detections of {name}")
        if len(dets) == 0:
            continue
        all_scores.append(dets[:, 4])
        if len(ellipses) == 0:
            continue
        overlaps = ellipse_box_overlaps(ellipses, dets[:, :4], image_size)
        thresholds, counts = true_positive_steps(overlaps, dets[:, 4])
        step_scores.append(thresholds)
        step_deltas.append(np.diff(counts, prepend=0))

    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    ascending, dets_at = np.unique(scores, return_counts=True)
    thresholds = ascending[::-1]
    # Detections (and true-positive changes) at scores >= each threshold.
    num_dets = np.cumsum(dets_at[::-1])
    step_scores = np.concatenate(step_scores) if step_scores else np.zeros(0)
    step_deltas = np.concatenate(step_deltas) if step_deltas else np.zeros(0, np.int64)
    step_bins = len(thresholds) - np.searchsorted(ascending, step_scores, side="right")
    deltas = np.bincount(step_bins, weights=step_deltas, minlength=len(thresholds))
    true_positives = np.cumsum(deltas)
    true_positives = np.rint(true_positives).astype(np.int64)
    return FDDBRoc(
        thresholds=thresholds,
        true_positives=true_positives,
        false_positives=num_dets - true_positives,
        num_faces=num_faces,
    )
