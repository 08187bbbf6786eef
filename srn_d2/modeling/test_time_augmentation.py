"""The authors' multi-scale test for SRN, merged by bounding-box voting.

For an image of ``h x w`` pixels and a budget of ``MAX_SIZE ** 2`` pixels, the
passes are those of the released test (docs/DESIGN.md, "Multi-scale test"):

* under the budget: the original, its horizontal flip, a ``SHRINK`` pass that
  contributes only boxes larger than ``SHRINK_MIN_BOX``, enlargements by
  ``ENLARGE_BASE ** t`` for t = 1 .. floor(log(budget / w / h, ENLARGE_BASE ** 2)),
  and one pass resized to exactly the budget; the enlarged passes contribute
  only boxes smaller than ``ENLARGE_MAX_BOX``;
* at or over the budget: the image resized to the budget, the flip of that
  resized image, and 0.75x and ``SHRINK`` resizes *of the resized image* (two
  interpolations, as the release does), contributing boxes larger than
  ``SHRINK_MIN_BOX``.

Each pass's boxes stay unclipped until all passes are merged; then the merged
boxes are clipped to the image. "Larger"
compares a box's longer side and "smaller" its shorter side with the
threshold, in original-image pixels (the released code's definition).
"""

import copy
import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Tuple

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data.image_io import image_to_tensor, read_image
from ..data.retinaface_labels import LANDMARK_FLIP_INDICES
from ..errors import InputError, require
from ..utils.box_iou import aligned_iou, box_areas

logger = logging.getLogger(__name__)

__all__ = ["TTAPass", "srn_tta_passes", "bbox_vote", "box_size_mask", "SRNWithTTA"]

# Which of a pass's boxes are kept.
KEEP_ALL, KEEP_LARGER, KEEP_SMALLER = "all", "larger", "smaller"
# Extra shrink of the released code's passes for images over the pixel budget.
_OVER_BUDGET_SHRINK = 0.75


def _check_scales(shrink: float, enlarge_base: float) -> None:
    require(enlarge_base > 1.0, "TEST.AUG.SRN.ENLARGE_BASE", enlarge_base, "must exceed 1")
    require(0.0 < shrink < 1.0, "TEST.AUG.SRN.SHRINK", shrink, "must lie in (0, 1)")


@dataclass(frozen=True)
class TTAPass:
    """One inference pass: resize the image by each of ``resizes`` in turn, then
    optionally flip it horizontally; ``keep`` says which of its boxes count."""

    resizes: Tuple[float, ...] = ()
    flip: bool = False
    keep: str = KEEP_ALL

    @property
    def scale(self) -> float:
        """The pass's overall scale, which maps its boxes back to the original image."""
        return math.prod(self.resizes)


def srn_tta_passes(
    height: int,
    width: int,
    max_size: int,
    *,
    shrink: float = 0.5,
    enlarge_base: float = 1.5,
    flip: bool = True,
) -> List[TTAPass]:
    """The released code's passes for an image of ``height x width`` (module docstring).

    The arithmetic (operand order included) is the release's, so that the
    number of enlargements and the budget scale agree with it to the last bit.
    """
    _check_scales(shrink, enlarge_base)
    budget = max_size * max_size
    if height * width >= budget:
        to_budget = (math.sqrt(budget / width / height),)
        passes = [TTAPass(to_budget)]
        if flip:
            passes.append(TTAPass(to_budget, flip=True))
        passes.append(TTAPass(to_budget + (_OVER_BUDGET_SHRINK,), keep=KEEP_LARGER))
        passes.append(TTAPass(to_budget + (shrink,), keep=KEEP_LARGER))
        return passes

    passes = [TTAPass()]
    if flip:
        passes.append(TTAPass(flip=True))
    passes.append(TTAPass((shrink,), keep=KEEP_LARGER))
    num_enlargements = int(math.floor(math.log(budget / width / height, enlarge_base**2)))
    passes += [
        TTAPass((enlarge_base ** (t + 1),), keep=KEEP_SMALLER) for t in range(num_enlargements)
    ]
    passes.append(TTAPass((math.sqrt(budget / height / width),), keep=KEEP_SMALLER))
    return passes


def box_size_mask(
    boxes: torch.Tensor, keep: str, min_box: float, max_box: float, offset: float = 0.0
) -> torch.Tensor:
    """(N,) bool: boxes a pass of kind ``keep`` contributes.

    Args:
        boxes: (N, 4) boxes (x1, y1, x2, y2) in original-image pixels.
        keep: KEEP_ALL, KEEP_LARGER (longer side > ``min_box``) or
            KEEP_SMALLER (shorter side < ``max_box``).
        offset: added to x2 - x1 and y2 - y1 to get a side (1 for inclusive pixel boxes).
    """
    sides = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1) + offset
    if keep == KEEP_ALL:
        return torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    if keep == KEEP_LARGER:
        return sides.max(dim=1).values > min_box
    if keep == KEEP_SMALLER:
        return sides.min(dim=1).values < max_box
    raise ValueError(
        f"unknown pass kind {keep!r}; expected {KEEP_ALL}, {KEEP_LARGER} or {KEEP_SMALLER}"
    )


def bbox_vote(
    boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float = 0.5, max_dets: int = 750
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Bounding-box voting: merge overlapping detections of all passes.

    In decreasing score order, the best remaining box and every remaining box
    with IoU >= ``iou_thresh`` to it (areas with the legacy +1) form a group and
    are removed. A group of one box is dropped; a larger group yields the
    score-weighted mean of its boxes with the group's highest score. Columns
    after a box's four (its landmarks) are averaged with the same weights.

    Args:
        boxes: (N, 4 + E) boxes (x1, y1, x2, y2), each followed by E values voted with it.
        scores: (N,) scores.
        iou_thresh: grouping IoU.
        max_dets: at most this many merged boxes are returned.

    Returns:
        (M, 4 + E) merged rows and (M,) scores, by decreasing score.
    """
    with _single_thread():
        return _vote(boxes, scores, iou_thresh, max_dets)


@contextmanager
def _single_thread():
    """Run torch's CPU ops on one thread. The vote issues thousands of ops on a few
    thousand boxes each; handing each to a thread pool costs more than the op
    itself, up to 50x the run time on a loaded CPU."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(num_threads)


def _vote(values: torch.Tensor, scores: torch.Tensor, iou_thresh: float, max_dets: int):
    order = torch.sort(scores, descending=True, stable=True).indices
    values, scores = values[order], scores[order]
    areas = box_areas(values[:, :4], plus_one=True)
    merged_values, merged_scores = [], []
    while len(values) > 0 and len(merged_values) < max_dets:
        iou = aligned_iou(
            values[:1, :4], values[:, :4], area_a=areas[:1], area_b=areas, plus_one=True
        )
        group = iou >= iou_thresh
        # A degenerate top box can miss its own group; it must leave anyway.
        group[0] = True
        if int(group.sum()) > 1:
            weights = scores[group]
            merged_values.append((values[group] * weights[:, None]).sum(dim=0) / weights.sum())
            merged_scores.append(scores[0])
        remaining = ~group
        values, scores, areas = values[remaining], scores[remaining], areas[remaining]
    if not merged_values:
        return values.new_zeros((0, values.shape[1])), scores.new_zeros((0,))
    return torch.stack(merged_values), torch.stack(merged_scores)


def _as_uint8(image: torch.Tensor) -> torch.Tensor:
    """The image as 8 bits: the released test resized 8-bit images, which OpenCV rounds
    pixel by pixel. Float images holding 8-bit values (DefaultPredictor's) convert exactly."""
    if image.dtype == torch.uint8:
        return image
    as_uint8 = image.round().clamp(0, 255).to(torch.uint8)
    if not torch.equal(as_uint8.to(image.dtype), image):
        raise InputError(
            "SRN's multi-scale test takes 8-bit images; this one has non-integer or out-of-range pixels"
        )
    return as_uint8


def _no_detections(image_size: Tuple[int, int], num_landmarks: int = 0) -> Instances:
    result = Instances(image_size)
    result.pred_boxes = Boxes(torch.zeros((0, 4)))
    result.scores = torch.zeros((0,))
    result.pred_classes = torch.zeros((0,), dtype=torch.int64)
    if num_landmarks:
        result.pred_keypoints = torch.zeros((0, num_landmarks, 3))
    return result


def _resize(image: torch.Tensor, scale: float) -> torch.Tensor:
    """Bilinear resize of a (C, H, W) image by ``scale`` as cv2.resize(fx=fy=scale) does:
    the released test resized with OpenCV, whose pixel mapping the box mapping below inverts."""
    if scale == 1.0:
        return image
    array = np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
    resized = cv2.resize(array, (0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    resized = resized.reshape(resized.shape[0], resized.shape[1], array.shape[2])
    return torch.from_numpy(resized).permute(2, 0, 1).to(image.device)


class SRNWithTTA(nn.Module):
    """An SRN model with the authors' multi-scale test.

    Calling it has the interface of the wrapped model's inference:
    ``[{"image": (C, H, W) tensor in cfg.INPUT.FORMAT, optional "height", "width"}]``
    (or ``"file_name"`` instead of ``"image"``) -> ``[{"instances": Instances}]``,
    boxes in the coordinates of ``height x width`` (default: the image's size).
    Passes run one at a time: their sizes differ by up to the whole pixel
    budget, so batching them would pad every pass to the largest.
    """

    @configurable
    def __init__(
        self,
        model: nn.Module,
        *,
        max_size: float,
        shrink: float,
        enlarge_base: float,
        flip: bool,
        shrink_min_box: float,
        enlarge_max_box: float,
        vote_iou: float,
        max_dets: int,
        input_format: str,
        inclusive_pixel_boxes: bool,
    ):
        """
        Args:
            model: an SRN (its ``inference`` returns unclipped boxes).
            max_size, shrink, enlarge_base, flip, shrink_min_box, enlarge_max_box,
                vote_iou: the passes and the vote (TEST.AUG.SRN.*, see config.py).
            max_dets: detections kept after the vote (TEST.DETECTIONS_PER_IMAGE).
            input_format: channel order of images read from ``file_name`` (INPUT.FORMAT).
            inclusive_pixel_boxes: the release's box convention (TEST.AUG.SRN.INCLUSIVE_PIXEL_BOXES).
        """
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        if not callable(getattr(model, "inference", None)):
            raise TypeError(
                f"TEST.AUG.ENABLED: the SRN multi-scale test needs a model whose inference() can "
                f"return unclipped boxes, such as SRN; got {type(model).__name__}"
            )
        self.model = model
        # A landmark model's points follow their boxes: mirrored, left and right swapped, on flipped passes.
        self.num_landmarks = getattr(model, "num_landmarks", 0)
        self.max_size = max_size
        self.shrink = shrink
        self.enlarge_base = enlarge_base
        self.flip = flip
        self.shrink_min_box = shrink_min_box
        self.enlarge_max_box = enlarge_max_box
        self.vote_iou = vote_iou
        self.max_dets = max_dets
        self.input_format = input_format
        # Legacy boxes are inclusive pixel indices: a box spans x2 - x1 + 1 pixels,
        # a flip maps x to W - 1 - x, and resizing maps pixel centers.
        self.offset = 1.0 if inclusive_pixel_boxes else 0.0
        _check_scales(self.shrink, self.enlarge_base)

    @classmethod
    def from_config(cls, cfg, model: nn.Module):
        aug = cfg.TEST.AUG.SRN
        return {
            "model": model,
            "max_size": aug.MAX_SIZE,
            "shrink": aug.SHRINK,
            "enlarge_base": aug.ENLARGE_BASE,
            "flip": aug.FLIP,
            "shrink_min_box": aug.SHRINK_MIN_BOX,
            "enlarge_max_box": aug.ENLARGE_MAX_BOX,
            "vote_iou": aug.VOTE_IOU,
            "max_dets": cfg.TEST.DETECTIONS_PER_IMAGE,
            "input_format": cfg.INPUT.FORMAT,
            "inclusive_pixel_boxes": aug.INCLUSIVE_PIXEL_BOXES,
        }

    def forward(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        with torch.no_grad():
            return [self._inference_one_image(self._with_image(x)) for x in batched_inputs]

    def _with_image(self, dataset_dict: Dict) -> Dict:
        if "image" in dataset_dict:
            return dataset_dict
        result = copy.copy(dataset_dict)
        image = read_image(result.pop("file_name"), self.input_format)
        result["image"] = image_to_tensor(image)
        return result

    def passes(self, height: int, width: int) -> List[TTAPass]:
        return srn_tta_passes(
            height,
            width,
            self.max_size,
            shrink=self.shrink,
            enlarge_base=self.enlarge_base,
            flip=self.flip,
        )

    def _run_pass(self, image: torch.Tensor, tta_pass: TTAPass) -> Instances:
        """Unclipped detections of one pass, mapped back to ``image``'s pixels and size-filtered.

        A pass that would shrink the image to nothing (a few-pixel image at 0.5x) detects nothing.
        """
        resized = image
        for scale in tta_pass.resizes:
            # OpenCV's output size: each side times the scale, rounded half to even.
            if min(round(resized.shape[-2] * scale), round(resized.shape[-1] * scale)) == 0:
                logger.debug(
                    f"{tuple(image.shape[-2:])} px image: pass {tta_pass} resizes it to nothing"
                )
                return _no_detections(tuple(image.shape[-2:]), self.num_landmarks)
            resized = _resize(resized, scale)
        if tta_pass.flip:
            resized = resized.flip(-1)
        instances = self.model.inference([{"image": resized}], do_postprocess=False)[0].to("cpu")
        boxes = instances.pred_boxes.tensor
        if tta_pass.flip:
            width = resized.shape[-1]
            boxes = torch.stack(
                [
                    width - boxes[:, 2] - self.offset,
                    boxes[:, 1],
                    width - boxes[:, 0] - self.offset,
                    boxes[:, 3],
                ],
                dim=1,
            )
        scale = tta_pass.scale
        boxes = (boxes - self.offset * (scale - 1) / 2.0) / scale
        keep = box_size_mask(
            boxes, tta_pass.keep, self.shrink_min_box, self.enlarge_max_box, self.offset
        )
        result = Instances(tuple(image.shape[-2:]))
        result.pred_boxes = Boxes(boxes[keep])
        result.scores = instances.scores[keep]
        result.pred_classes = instances.pred_classes[keep]
        if self.num_landmarks:
            points = instances.pred_keypoints.clone()
            if tta_pass.flip:
                points[..., 0] = resized.shape[-1] - points[..., 0] - self.offset
                points = points[:, LANDMARK_FLIP_INDICES]
            points[..., :2] = (points[..., :2] - self.offset * (scale - 1) / 2.0) / scale
            result.pred_keypoints = points[keep]
        return result

    def _vote(self, detections: Instances) -> Instances:
        """Bounding-box voting within each class, then the best ``max_dets`` overall.

        The vote runs, and its boxes stay, in float64: the release stacks its
        passes into a float64 array, and rounding the merged boxes to float32
        would move some of its integer submission coordinates by a pixel.
        """
        values, scores, classes = [], [], []
        # Each row: the box, then (with landmarks) its points, voted with the box's weights.
        all_values = detections.pred_boxes.tensor.double()
        if self.num_landmarks:
            all_values = torch.cat(
                [all_values, detections.pred_keypoints[..., :2].flatten(1).double()], dim=1
            )
        all_scores = detections.scores.double()
        for cls in detections.pred_classes.unique().tolist():
            in_class = detections.pred_classes == cls
            class_values, class_scores = bbox_vote(
                all_values[in_class], all_scores[in_class], self.vote_iou, self.max_dets
            )
            values.append(class_values)
            scores.append(class_scores)
            classes.append(torch.full((len(class_scores),), cls, dtype=torch.int64))
        merged = (
            torch.cat(values)
            if values
            else torch.zeros((0, all_values.shape[1]), dtype=torch.float64)
        )
        result = Instances(detections.image_size)
        result.pred_boxes = Boxes(merged[:, :4])
        result.scores = torch.cat(scores) if scores else torch.zeros((0,), dtype=torch.float64)
        result.pred_classes = (
            torch.cat(classes) if classes else torch.zeros((0,), dtype=torch.int64)
        )
        if self.num_landmarks:
            points = merged[:, 4:].reshape(len(merged), self.num_landmarks, 2)
            point_scores = result.scores[:, None, None].expand(-1, self.num_landmarks, 1)
            result.pred_keypoints = torch.cat([points, point_scores], dim=-1)
        order = torch.sort(result.scores, descending=True, stable=True).indices[: self.max_dets]
        return result[order]

    def _inference_one_image(self, dataset_dict: Dict) -> Dict[str, Instances]:
        image = _as_uint8(dataset_dict["image"])
        height, width = image.shape[-2:]
        detections = Instances.cat([self._run_pass(image, p) for p in self.passes(height, width)])
        merged = self._vote(detections)
        boxes = merged.pred_boxes.tensor
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width - self.offset)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height - self.offset)
        out_height = dataset_dict.get("height", height)
        out_width = dataset_dict.get("width", width)
        if (out_height, out_width) != (height, width):
            merged = detector_postprocess(merged, out_height, out_width)
        return {"instances": merged}
