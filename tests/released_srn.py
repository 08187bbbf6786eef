"""An independent restatement of the authors' released SRN test, for parity tests.

Written from the behaviour of the release (github.com/ChiCheng123/SRN,
``srn/model/rpn_proposal.py``, ``srn/utils/*`` and ``tools/test.py``), in plain
torch and numpy, sharing no code with srn_d2's model: its legacy anchors,
per-level decoding, NMS, multi-scale test, voting and submission writer. The
network itself, under the release's parameter names, is
``released_network.py`` beside it (also independent of ``srn_d2.modeling``).
"""

import math
from typing import List

import cv2
import numpy as np
import torch
from torch import nn

from released_network import ReleasedSRN

ANCHOR_SCALES = (2.0, 2.828427)
ANCHOR_RATIO = 1.25
STRIDES = (4, 8, 16, 32, 64, 128)
STC_LEVELS = (0, 1, 2)
STR_LEVELS = (3, 4, 5)
SCORE_THRESH = 0.05
STEP1_THRESH = 0.01
TOP_N_PER_LEVEL = 6000
TOP_N = 750
NMS_IOU = 0.4
MIN_CELLS_FOR_THRESH = 120
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def randomize(net: ReleasedSRN, seed: int) -> ReleasedSRN:
    """Weights that give a few hundred detections of varied score (0.002 .. 0.9), size and
    place, with width / height deltas beyond Detectron2's decoding clamp on some anchors."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0, math.sqrt(1.0 / fan_in), generator=generator)
                if module.bias is not None:
                    module.bias.normal_(0, 0.1, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.0, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(1.0, 2.0, generator=generator)
        net.cls_subnet_pred.weight.mul_(10.0)
        net.cls_subnet_pred.bias.fill_(-4.0)
        net.box_subnet_pred.weight.mul_(8.0)
    return net.eval()


def preprocess(bgr: np.ndarray) -> torch.Tensor:
    """The release's preprocess: BGR uint8 -> RGB in [0, 1] -> ImageNet-normalized (1, 3, H, W)."""
    rgb = (
        torch.from_numpy(np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        .permute(2, 0, 1)
        .float()
        / 255
    )
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((rgb - mean) / std)[None]


def legacy_anchors(height: int, width: int, stride: int) -> np.ndarray:
    """(H * W * 2, 4) float64 anchors of one level, position-major as the release lays them out."""
    window = stride  # the (0, 0, S-1, S-1) base window
    center = (window - 1) / 2.0
    w = np.round(np.sqrt(window * window / ANCHOR_RATIO))
    h = np.round(w * ANCHOR_RATIO)
    cells = []
    for scale in ANCHOR_SCALES:
        sw, sh = w * scale, h * scale
        half_w, half_h = 0.5 * (sw - 1), 0.5 * (sh - 1)
        cells.append([center - half_w, center - half_h, center + half_w, center + half_h])
    cells = np.array(cells)
    xs, ys = np.meshgrid(np.arange(width) * stride, np.arange(height) * stride)
    shifts = np.stack([xs.ravel(), ys.ravel(), xs.ravel(), ys.ravel()], axis=1)
    return (shifts[:, None, :] + cells[None, :, :]).reshape(-1, 4)


def apply_deltas(boxes: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """The release's decoding: centers and sizes with width = x2 - x1, no clamping."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0 + deltas[:, 0] * widths
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0 + deltas[:, 1] * heights
    w = np.exp(deltas[:, 2]) * widths
    h = np.exp(deltas[:, 3]) * heights
    return np.stack([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], axis=1)


def _flat(prediction: torch.Tensor, per_anchor: int) -> np.ndarray:
    """(1, A*K, H, W) -> (H*W*A, K) numpy."""
    _, channels, height, width = prediction.shape
    return (
        prediction[0]
        .permute(1, 2, 0)
        .reshape(height * width * channels // per_anchor, per_anchor)
        .numpy()
    )


def decode_level(level: int, step1, step2) -> np.ndarray:
    """(n, 5) x1, y1, x2, y2, score of one level, best first, before NMS."""
    cls1, loc1 = step1
    cls2, loc2 = step2
    height, width = cls1.shape[-2:]
    anchors = legacy_anchors(height, width, STRIDES[level])
    scores1 = _flat(torch.sigmoid(cls1), 1)[:, 0]
    scores2 = _flat(torch.sigmoid(cls2), 1)[:, 0]
    if level in STR_LEVELS:
        anchors = apply_deltas(anchors, _flat(loc1, 4))
    thresh = SCORE_THRESH if height * width >= MIN_CELLS_FOR_THRESH else 0.0
    keep = scores2 > thresh
    if level in STC_LEVELS:
        keep &= scores1 > STEP1_THRESH
    index = np.flatnonzero(keep)
    order = index[np.argsort(-scores2[index], kind="stable")][:TOP_N_PER_LEVEL]
    boxes = apply_deltas(anchors[order], _flat(loc2, 4)[order])
    return np.concatenate([boxes, scores2[order, None].astype(np.float64)], axis=1)


def nms(dets: np.ndarray, thresh: float) -> np.ndarray:
    """Greedy NMS of score-sorted rows in float32 with +1 areas; suppress IoU > thresh."""
    boxes = dets[:, :4].astype(np.float32)
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        keep.append(i)
        w = np.maximum(
            np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0]) + 1,
            np.float32(0),
        )
        h = np.maximum(
            np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1]) + 1,
            np.float32(0),
        )
        inter = w * h
        iou = inter / (areas[i] + areas - inter)
        later = np.arange(len(boxes)) > i
        suppressed |= later & (iou > np.float32(thresh))
    return np.array(keep, dtype=np.int64)


@torch.no_grad()
def detect(net: ReleasedSRN, bgr: np.ndarray) -> np.ndarray:
    """The released single-scale detections of one BGR image: (n, 5) x1, y1, x2, y2, score, unclipped."""
    step1, step2 = net(preprocess(bgr))
    dets = np.concatenate(
        [decode_level(level, step1[level], step2[level]) for level in range(len(STRIDES))]
    )
    if len(dets) == 0:
        return dets
    dets = dets[np.argsort(-dets[:, 4], kind="stable")]
    dets = dets[nms(dets, NMS_IOU)[:TOP_N]]
    return dets[np.argsort(-dets[:, 4], kind="stable")][:TOP_N]


def _pass(net: ReleasedSRN, bgr: np.ndarray) -> np.ndarray:
    """One pass of the multi-scale test: float32 detections, or the release's all-zero row when there are none."""
    dets = detect(net, bgr).astype(np.float32)
    return dets if len(dets) else np.zeros((1, 5), dtype=np.float32)


def _flip(dets: np.ndarray, width: int) -> np.ndarray:
    out = dets.copy()
    out[:, 0], out[:, 2] = width - dets[:, 2] - 1, width - dets[:, 0] - 1
    return out


def _unscale(dets: np.ndarray, scale: float) -> np.ndarray:
    out = dets.copy()
    out[:, :4] = (out[:, :4] - (scale - 1) / 2.0) / scale
    return out


def _sides(dets: np.ndarray):
    return dets[:, 2] - dets[:, 0] + 1, dets[:, 3] - dets[:, 1] + 1


def vote(dets: np.ndarray, max_dets: int = TOP_N) -> np.ndarray:
    """Bounding-box voting (float64): groups of IoU >= 0.5 with the best remaining box; singletons dropped."""
    dets = dets[np.argsort(-dets[:, 4], kind="stable")]
    merged = []
    while len(dets):
        area = (dets[:, 2] - dets[:, 0] + 1) * (dets[:, 3] - dets[:, 1] + 1)
        w = np.maximum(
            0.0, np.minimum(dets[0, 2], dets[:, 2]) - np.maximum(dets[0, 0], dets[:, 0]) + 1
        )
        h = np.maximum(
            0.0, np.minimum(dets[0, 3], dets[:, 3]) - np.maximum(dets[0, 1], dets[:, 1]) + 1
        )
        inter = w * h
        group = inter / (area[0] + area - inter) >= 0.5
        members, dets = dets[group], dets[~group]
        if len(members) > 1:
            weights = members[:, 4:5]
            # A group of the all-zero rows alone averages 0 / 0; it scores 0 and is dropped below.
            with np.errstate(invalid="ignore"):
                box = (members[:, :4] * weights).sum(0) / weights.sum()
            merged.append(np.append(box, members[:, 4].max()))
    return np.array(merged).reshape(-1, 5)[:max_dets]


def multi_scale(net: ReleasedSRN, bgr: np.ndarray, max_size: int) -> np.ndarray:
    """The released multi-scale test of one image: voted, clipped (n, 5) float64 detections."""
    height, width = bgr.shape[:2]
    budget = max_size * max_size
    # The release starts its enlarged passes' array with an all-zero row, in both branches.
    enlarged = [np.zeros((1, 5), dtype=np.float32)]
    if height * width < budget:
        original = _pass(net, bgr)
        flipped = _flip(_pass(net, cv2.flip(bgr, 1)), width)
        shrunk = _unscale(_pass(net, cv2.resize(bgr, (0, 0), fx=0.5, fy=0.5)), 0.5)
        shrunk = shrunk[np.maximum(*_sides(shrunk)) > 30]
        scales = [
            math.pow(1.5, t + 1)
            for t in range(int(math.floor(math.log(budget / width / height, 2.25))))
        ]
        scales.append(math.sqrt(budget / height / width))
        for scale in scales:
            enlarged.append(
                _unscale(_pass(net, cv2.resize(bgr, (0, 0), fx=scale, fy=scale)), scale)
            )
        enlarged = np.concatenate(enlarged)
        enlarged = enlarged[np.minimum(*_sides(enlarged)) < 100]
    else:
        scale = math.sqrt(budget / width / height)
        largest = cv2.resize(bgr, (0, 0), fx=scale, fy=scale)
        original = _unscale(_pass(net, largest), scale)
        flipped = _unscale(_flip(_pass(net, cv2.flip(largest, 1)), largest.shape[1]), scale)
        shrunk = np.concatenate(
            [
                _unscale(_pass(net, cv2.resize(largest, (0, 0), fx=f, fy=f)), scale * f)
                for f in (0.75, 0.5)
            ]
        )
        shrunk = shrunk[np.maximum(*_sides(shrunk)) > 30]
        enlarged = enlarged[0]
    merged = vote(np.concatenate([original, flipped, shrunk, enlarged]).astype(np.float64))
    merged[:, 0:4:2] = np.clip(merged[:, 0:4:2], 0, width - 1)
    merged[:, 1:4:2] = np.clip(merged[:, 1:4:2], 0, height - 1)
    return merged[merged[:, 4] != 0]


def submission_lines(dets: np.ndarray) -> List[str]:
    """The box lines the release writes for voted detections."""
    return [
        "{} {} {} {} {}".format(
            round(float(d[0])),
            round(float(d[1])),
            round(float(d[2] - d[0] + 1)),
            round(float(d[3] - d[1] + 1)),
            round(float(d[4]), 3),
        )
        for d in dets
    ]
