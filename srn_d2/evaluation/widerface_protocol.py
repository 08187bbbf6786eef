"""The official WIDER FACE evaluation (easy / medium / hard AP), vectorized.

Semantics follow the official MATLAB tool (``eval_tools``: ``read_pred.m``,
``norm_score.m``, ``evaluation.m`` with ``image_evaluation``, ``image_pr_info``,
``dataset_pr_info``, ``boxoverlap.m`` and ``plot/VOCap.m``):

1. Scores are min-max normalized over every prediction of every ground-truth
   image (face-less images included, images outside the ground truth not):
   ``(s - min) / (max - min)``, where ``max`` starts from the smallest positive
   float32 (``realmin('single')``). When all scores are equal the official tool
   divides by zero and counts nothing; here they become 1. Predictions must be
   finite: one infinite score would squash every other score to 0 or 1.
2. IoU is the tool's: boxes are ``(x, y, x + w, y + h)`` and the areas use the
   legacy "+1" (``(x2 - x1 + 1) * (y2 - y1 + 1)``); pairs whose "+1"
   intersection width or height is <= 0 have IoU 0.
3. Per image (images with no face or no prediction only add their listed faces
   to the face count), predictions in descending score order each take the face
   of highest IoU (first such face on ties). If that IoU >= the threshold and
   the face is not listed in the setting, the prediction is discarded: neither
   true nor false positive. If the face is listed and not yet recalled, it
   becomes recalled. Every prediction takes its best face regardless of the
   others, so a face counts as recalled at threshold t exactly when some
   prediction scoring >= t takes it with IoU >= the threshold.
4. For the 1000 thresholds ``t_k = 1 - k/1000`` (k = 1..1000): kept =
   non-discarded predictions with score >= t_k, recalled = faces recalled by
   predictions with score >= t_k, both summed over images.
   precision = recalled / kept (NaN where nothing is kept), recall =
   recalled / number of listed faces.
5. AP = VOC all-point area: sentinels (0, 0) and (1, 0) around the curve, the
   precision envelope (running max from the right, NaN ignored like MATLAB's
   ``max``), sum of recall steps times envelope.

Because of (3), the work splits into one IoU pass per image (best face and its
IoU per prediction, independent of setting and threshold) and, per
(setting, IoU threshold), a few whole-dataset bincounts.
"""

import math
import warnings
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ..errors import InputError
from .prediction_files import require_valid_rows
from .widerface_gt import SETTINGS, WiderFaceGroundTruth

NUM_THRESHOLDS = 1000
# IoU thresholds of the COCO-style AP: 0.50, 0.55, ..., 0.95.
COCO_IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
HARD_IOU_THRESHOLDS = (0.5, 0.6, 0.7, 0.8)
FP_RECALL_TARGETS = (0.8, 0.9)


def score_thresholds(num_thresholds: int = NUM_THRESHOLDS) -> np.ndarray:
    """``t_k = 1 - k / num_thresholds`` for k = 1..num_thresholds (descending)."""
    return 1 - np.arange(1, num_thresholds + 1) / num_thresholds


def normalize_scores(scores: np.ndarray) -> np.ndarray:
    """Official min-max normalization of the whole prediction set's scores."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return scores.copy()
    low = scores.min()
    high = max(scores.max(), float(np.finfo(np.float32).tiny))
    if not high > low:
        return np.ones_like(scores)
    return (scores - low) / (high - low)


def official_iou(pred_xywh: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
    """(n, m) IoU of the official tool (``boxoverlap.m`` on x2 = x + w, "+1" areas)."""
    p = np.asarray(pred_xywh, dtype=np.float64)
    g = np.asarray(gt_xywh, dtype=np.float64)
    px1, py1 = p[:, 0:1], p[:, 1:2]
    px2, py2 = px1 + p[:, 2:3], py1 + p[:, 3:4]
    gx1, gy1 = g[:, 0], g[:, 1]
    gx2, gy2 = gx1 + g[:, 2], gy1 + g[:, 3]
    iw = np.minimum(px2, gx2) - np.maximum(px1, gx1) + 1
    ih = np.minimum(py2, gy2) - np.maximum(py1, gy1) + 1
    np.clip(iw, 0, None, out=iw)
    np.clip(ih, 0, None, out=ih)
    inter = iw * ih
    area_p = (px2 - px1 + 1) * (py2 - py1 + 1)
    area_g = (gx2 - gx1 + 1) * (gy2 - gy1 + 1)
    union = area_p + area_g - inter
    # Where the intersection is positive the union is too; elsewhere the tool sets 0
    # (and degenerate boxes could make 0/0 there).
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


# IoU matrix elements computed at once (about 8 MB per float64 array): an image with
# 300,000 predictions and 400 faces is matched in slices, not in a 1 GB matrix.
MATCH_CHUNK_ELEMENTS = 1 << 20


def best_overlaps(pred_xywh: np.ndarray, gt_xywh: np.ndarray, chunk_elements: Optional[int] = None):
    """Each detection's face of highest official IoU, and that IoU, computed by slices of detections.

    Args:
        pred_xywh: (n, 4); gt_xywh: (m, 4), m > 0.
    Returns:
        best_face: (n,) int index into ``gt_xywh`` (the first of equal IoUs); best_iou: (n,).
    """
    rows = max(1, (chunk_elements or MATCH_CHUNK_ELEMENTS) // max(len(gt_xywh), 1))
    best_face = np.empty(len(pred_xywh), dtype=np.int64)
    best_iou = np.empty(len(pred_xywh), dtype=np.float64)
    for start in range(0, len(pred_xywh), rows):
        iou = official_iou(pred_xywh[start : start + rows], gt_xywh)
        best = iou.argmax(axis=1)
        best_face[start : start + rows] = best
        best_iou[start : start + rows] = iou[np.arange(len(best)), best]
    return best_face, best_iou


def match_image(
    pred_xywh: np.ndarray, scores: np.ndarray, gt_xywh: np.ndarray, iou_threshold: float = 0.5
):
    """One image's detections sorted into true and false positives by the protocol's rule.

    Each detection takes the face it overlaps most (official IoU). Taken in
    descending score order, it is a true positive when that IoU reaches
    ``iou_threshold`` and no higher-scoring detection has found the face yet;
    any other detection lowers the protocol's precision, so it is a false
    positive here (a second box on a found face included).

    Args:
        pred_xywh: (n, 4) detections ``x, y, w, h``; scores: (n,).
        gt_xywh: (m, 4) faces ``x, y, w, h``.
    Returns:
        (true_positive, found): (n,) bool per detection, (m,) bool per face.
    """
    pred_xywh = np.asarray(pred_xywh, dtype=np.float64).reshape(-1, 4)
    gt_xywh = np.asarray(gt_xywh, dtype=np.float64).reshape(-1, 4)
    true_positive = np.zeros(len(pred_xywh), dtype=bool)
    found = np.zeros(len(gt_xywh), dtype=bool)
    if len(pred_xywh) == 0 or len(gt_xywh) == 0:
        return true_positive, found
    best_face, best_iou = best_overlaps(pred_xywh, gt_xywh)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = order[best_iou[order] >= iou_threshold]
    # np.unique's first occurrence in score order is each face's highest-scoring hit.
    faces, first = np.unique(best_face[hits], return_index=True)
    true_positive[hits[first]] = True
    found[faces] = True
    return true_positive, found


@dataclass(frozen=True)
class PRCurve:
    """Dataset precision/recall at the official score thresholds (descending)."""

    thresholds: np.ndarray
    num_kept: np.ndarray
    num_recalled: np.ndarray
    num_faces: int

    @property
    def precision(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.num_recalled / self.num_kept

    @property
    def recall(self) -> np.ndarray:
        if self.num_faces == 0:
            return np.full(len(self.thresholds), np.nan)
        return self.num_recalled / self.num_faces

    @property
    def ap(self) -> float:
        if self.num_faces == 0:
            return math.nan
        return voc_ap(self.recall, self.precision)

    def false_positives_at_recall(self, target: float) -> float:
        """Kept minus recalled at the first (highest) threshold whose recall >= target;
        ``inf`` if no threshold reaches it."""
        reached = np.flatnonzero(self.recall >= target)
        if reached.size == 0:
            return math.inf
        k = reached[0]
        return float(self.num_kept[k] - self.num_recalled[k])


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point AP (``VOCap.m``): area under the precision envelope."""
    mrec = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(precision, np.float64), [0.0]])
    envelope = np.fmax.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * envelope[steps]))


class WiderFaceMatches:
    """Per-prediction matching of a prediction set against the ground truth.

    Holds, for every prediction of an image with faces, its best face (global
    index into ``gt.boxes``), that face's IoU and the index of the first score
    threshold it passes; PR curves for any setting and IoU threshold follow.
    """

    def __init__(
        self,
        predictions: Mapping[str, np.ndarray],
        gt: WiderFaceGroundTruth,
        num_thresholds: int = NUM_THRESHOLDS,
    ):
        """
        Args:
            predictions: image id -> (n, 5) array of ``x, y, w, h, score``
                (raw scores; any order). Images without an entry have no
                predictions; entries for images outside ``gt`` are ignored.
            gt: the ground truth.
        """
        self.gt = gt
        self.thresholds = score_thresholds(num_thresholds)
        per_image = [self._as_array(predictions.get(i), i) for i in gt.image_ids]
        all_scores = np.concatenate([p[:, 4] for p in per_image]) if per_image else np.zeros(0)
        normalized = normalize_scores(all_scores)

        best_face, best_iou, scores = [], [], []
        start = 0
        for index, preds in enumerate(per_image):
            stop = start + len(preds)
            face_start, face_stop = gt.offsets[index], gt.offsets[index + 1]
            if len(preds) and face_stop > face_start:
                best, iou = best_overlaps(preds[:, :4], gt.boxes[face_start:face_stop])
                best_iou.append(iou)
                best_face.append(best + face_start)
                scores.append(normalized[start:stop])
            start = stop
        self.best_face = np.concatenate(best_face) if best_face else np.zeros(0, np.int64)
        self.best_iou = np.concatenate(best_iou) if best_iou else np.zeros(0)
        self.scores = np.concatenate(scores) if scores else np.zeros(0)
        # first_threshold[i] = k - 1 for the first (largest) t_k <= score; every
        # normalized score passes t_1000 = 0.
        ascending = self.thresholds[::-1]
        passed = np.searchsorted(ascending, self.scores, side="right")
        self.first_threshold = len(self.thresholds) - passed

    @staticmethod
    def _as_array(preds: Optional[np.ndarray], image_id: str) -> np.ndarray:
        if preds is None:
            return np.zeros((0, 5))
        preds = np.asarray(preds, dtype=np.float64)
        if preds.size == 0:
            return preds.reshape(0, 5)
        if preds.ndim != 2 or preds.shape[1] != 5:
            raise InputError(
                f"predictions of {image_id}: expected (n, 5) x, y, w, h, score; got {preds.shape}"
            )
        return require_valid_rows(preds, f"predictions of {image_id}")

    def pr_curve(self, setting: str = "hard", iou_threshold: float = 0.5) -> PRCurve:
        listed = self.gt.listed[setting]
        num_bins = len(self.thresholds) + 1
        matched = self.best_iou >= iou_threshold
        face_listed = listed[self.best_face]
        discarded = matched & ~face_listed
        hit = matched & face_listed

        kept_per_bin = np.bincount(self.first_threshold[~discarded], minlength=num_bins)
        # A face is recalled from the first threshold passed by any prediction hitting it.
        face_first = np.full(self.gt.num_faces, len(self.thresholds), dtype=np.int64)
        np.minimum.at(face_first, self.best_face[hit], self.first_threshold[hit])
        recalled_per_bin = np.bincount(face_first, minlength=num_bins)
        return PRCurve(
            thresholds=self.thresholds,
            num_kept=np.cumsum(kept_per_bin[:-1]),
            num_recalled=np.cumsum(recalled_per_bin[:-1]),
            num_faces=int(listed.sum()),
        )


def evaluate_widerface(
    predictions: Mapping[str, np.ndarray],
    gt: WiderFaceGroundTruth,
    iou_threshold: float = 0.5,
    settings: Sequence[str] = SETTINGS,
) -> Dict[str, PRCurve]:
    """PR curves of the official protocol, one per setting; ``curve.ap`` is the AP."""
    matches = WiderFaceMatches(predictions, gt)
    return {setting: matches.pr_curve(setting, iou_threshold) for setting in settings}


def widerface_metrics(matches: WiderFaceMatches):
    """All metrics the SRN analysis uses, as fractions (APs in [0, 1]).

    Returns:
        (metrics, curves): metrics is a dict with
            ``AP_easy``, ``AP_medium``, ``AP_hard`` (IoU 0.5);
            ``AP_hard_IoU50/60/70/80``: hard-set AP at that IoU threshold;
            ``AP_hard_COCO``: hard-set AP averaged over IoU 0.50:0.05:0.95;
            ``FP_at_recall80/90``: hard set, IoU 0.5, false positives
            (kept - recalled) at the first threshold whose recall reaches
            80% / 90%, ``inf`` when no threshold does.
        curves maps each setting to its IoU-0.5 PRCurve.
    """
    curves = {setting: matches.pr_curve(setting, 0.5) for setting in SETTINGS}
    metrics = {f"AP_{setting}": curves[setting].ap for setting in SETTINGS}
    hard_aps = {0.5: curves["hard"].ap}
    for thr in COCO_IOU_THRESHOLDS[1:]:
        hard_aps[thr] = matches.pr_curve("hard", thr).ap
    for thr in HARD_IOU_THRESHOLDS:
        metrics[f"AP_hard_IoU{round(thr * 100)}"] = hard_aps[thr]
    metrics["AP_hard_COCO"] = float(np.mean(list(hard_aps.values())))
    for target in FP_RECALL_TARGETS:
        fp = curves["hard"].false_positives_at_recall(target)
        metrics[f"FP_at_recall{round(target * 100)}"] = fp
    return metrics, curves


def warn_unmatched_ids(prediction_ids, gt: WiderFaceGroundTruth, what: str = "predictions") -> None:
    """One warning for prediction image ids that the ground truth does not know."""
    known = set(gt.image_ids)
    unknown = sorted(i for i in prediction_ids if i not in known)
    if unknown:
        warnings.warn(
            f"{len(unknown)} image(s) with {what} are not in the ground truth and are ignored, "
            f"e.g. {', '.join(unknown[:3])}",
            stacklevel=2,
        )
