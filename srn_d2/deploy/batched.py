"""SRN's single-scale inference on a padded batch of images of different sizes:
the graph of the batched export (``srn_d2.tools.export --batch``).

Detectron2 infers image by image after the network (``DenseDetector`` loops
over the batch in Python), which a traced graph cannot do for a batch size it
has not seen. :class:`BatchedSRN` does every step on the whole batch instead:

1. pixels normalized, then zeroed outside each image (Detectron2 pads the
   normalized image with zeros), so the caller may pad with anything;
2. the network on the padded batch;
3. per level, the anchors outside an image's own feature map (ceil(size /
   stride) cells each way) are left out and the score threshold follows the
   image's own number of cells, as if the image had been run alone;
4. the top candidates per image and level, decoding (boxes, and landmarks
   for a model with them), NMS within each image, the cap per image, and
   Detectron2's clipping of the boxes to the image.

Each image's result equals the one-image model's but for the border: the
convolutions near the bottom and right edge of a padded image see the padding
where, alone, they would see their own zero padding. An image no other image
in the batch exceeds is not padded and gets the one-image detections.
"""

from typing import Tuple

import torch
import torchvision
from torch import nn

from ..modeling import SRN
from ..modeling.decoding import capped, decode_anchors
from ..modeling.two_step_head import TwoStepPredictions

__all__ = ["BatchedSRN", "BatchedNMS"]


@torch.jit.script_if_tracing
def _nms_each_image(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Greedy NMS of each image and class apart, as ONNX's NonMaxSuppression computes it.

    Args:
        boxes: (B, N, 4) x1 y1 x2 y2; scores: (B, C, N), negative = not a candidate.
    Returns:
        (M, 3) int64 rows (image, class, candidate) kept, by image, then class, best first.
    """
    kept = [torch.zeros((0, 3), dtype=torch.int64, device=boxes.device)]
    for image in range(boxes.shape[0]):
        for category in range(scores.shape[1]):
            candidates = torch.nonzero(scores[image, category] >= 0).flatten()
            keep = candidates[
                torchvision.ops.nms(
                    boxes[image, candidates], scores[image, category, candidates], iou_threshold
                )
            ]
            rows = torch.stack(
                [torch.full_like(keep, image), torch.full_like(keep, category), keep], dim=1
            )
            kept.append(rows)
    return torch.cat(kept)


class BatchedNMS(torch.autograd.Function):
    """NMS within each image and class of a batch, exported as ONNX's NonMaxSuppression on the
    batch itself. torchvision's ``batched_nms`` moves each image's boxes by an offset instead;
    at those offsets float32 loses the precision IoU needs (untrained models decode boxes tens
    of thousands of pixels wide), and the export would keep other boxes than PyTorch."""

    @staticmethod
    def forward(
        ctx, boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float
    ) -> torch.Tensor:
        return _nms_each_image(boxes, scores, iou_threshold)

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float):
        # Every box may survive (the cap comes after); non-candidates score -1, below -0.5.
        limits = [
            g.op("Constant", value_t=torch.tensor([value], dtype=dtype))
            for value, dtype in (
                (2**31 - 1, torch.int64),
                (iou_threshold, torch.float32),
                (-0.5, torch.float32),
            )
        ]
        return g.op("NonMaxSuppression", boxes, scores, *limits)


class BatchedSRN(nn.Module):
    """(B, 3, H, W) padded images and their (B, 2) sizes -> every image's detections."""

    def __init__(self, model: SRN):
        super().__init__()
        self.model = model
        self.strides = dict(zip(model.plan.levels, model.anchor_generator.strides))

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """
        Args:
            images: (B, 3, H, W) float32 in the model's channel order, image i in
                its top-left ``image_sizes[i]`` pixels.
            image_sizes: (B, 2) int64 height, width of each image.

        Returns:
            boxes (N, 4) x1 y1 x2 y2, clipped to their image; scores (N,);
            classes (N,); batch_index (N,): the image of each detection; and for a
            model with landmarks, landmarks (N, K, 2) x, y (not clipped).
            Grouped by image, best first within each.
        """
        model = self.model
        features = model.backbone(self._normalize(images, image_sizes))
        predictions = model.flatten_predictions(model.head(features))
        anchors = model.level_anchors(features)
        scores = model.stc.scores(predictions.step2_logits, predictions.step1_logits)
        step2_anchors = model.str.step2_anchors(
            {k: a.tensor for k, a in anchors.items()}, predictions.step1_deltas
        )
        candidates = [
            self._level_candidates(
                level,
                features[level],
                scores[level],
                predictions,
                step2_anchors[level],
                image_sizes,
            )
            for level in model.plan.levels
        ]
        boxes, scores, classes, *landmarks = (torch.cat(parts, dim=1) for parts in zip(*candidates))
        nms_boxes = (
            boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0]) if model.nms_area_plus_one else boxes
        )
        # ONNX gets the NonMaxSuppression operator; TorchScript keeps the scripted loop over images.
        nms = BatchedNMS.apply if torch.onnx.is_in_onnx_export() else _nms_each_image
        kept = nms(nms_boxes, scores[:, None, :], model.test_nms_thresh)
        batch_index, candidate = kept[:, 0], kept[:, 2]
        boxes, scores, classes, *landmarks = (
            x[batch_index, candidate] for x in (boxes, scores, classes, *landmarks)
        )
        keep = self._rank_in_image(batch_index, images.shape[0]) < model.max_detections_per_image
        boxes, scores, classes, batch_index, *landmarks = (
            x[keep] for x in (boxes, scores, classes, batch_index, *landmarks)
        )
        boxes = self._clip(boxes, image_sizes[batch_index])
        nonempty = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
        return tuple(x[nonempty] for x in (boxes, scores, classes, batch_index, *landmarks))

    def _normalize(self, images: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> normalized, zero outside each image, padded to the backbone's size divisibility."""
        model = self.model
        x = (images - model.pixel_mean) / model.pixel_std
        rows = torch.arange(images.shape[2], device=images.device)
        cols = torch.arange(images.shape[3], device=images.device)
        inside = (rows[None, :, None] < image_sizes[:, 0, None, None]) & (
            cols[None, None, :] < image_sizes[:, 1, None, None]
        )
        x = x * inside[:, None].to(x.dtype)
        divisibility = model.backbone.size_divisibility
        if divisibility > 1:
            height, width = x.shape[2], x.shape[3]
            x = nn.functional.pad(
                x,
                [
                    0,
                    (divisibility - width % divisibility) % divisibility,
                    0,
                    (divisibility - height % divisibility) % divisibility,
                ],
            )
        return x

    def _own_cells(self, level: str, image_sizes: torch.Tensor) -> torch.Tensor:
        """(B, 2) rows and columns of the level's feature map for each image run alone."""
        divisibility = self.model.backbone.size_divisibility
        sizes = image_sizes
        if divisibility > 1:
            sizes = (
                torch.div(sizes + divisibility - 1, divisibility, rounding_mode="floor")
                * divisibility
            )
        stride = self.strides[level]
        return torch.div(sizes + stride - 1, stride, rounding_mode="floor")

    def _level_candidates(
        self,
        level: str,
        feature: torch.Tensor,
        scores: torch.Tensor,
        predictions: TwoStepPredictions,
        anchors: torch.Tensor,
        image_sizes: torch.Tensor,
    ) -> Tuple[torch.Tensor, ...]:
        """One level's best candidates of every image, as :func:`~srn_d2.modeling.decoding.decode_level`
        selects them for one image, in a dense layout: the same number of slots for every image.

        Args:
            feature: (B, C, H_l, W_l) the level's feature map (for its grid).
            scores: (B, R_l, K) face scores, 0 where STC rejects.
            anchors: (R_l, 4) grid anchors, or (B, R_l, 4) refined ones (STR levels).

        Returns:
            boxes (B, k, 4) decoded, scores (B, k), classes (B, k), with k =
            min(topk candidates, R_l * K), and, for a model with landmarks, their
            (B, k, num_landmarks, 2) points; a slot without a candidate scores -1.
        """
        model = self.model
        batch, cells, num_classes = scores.shape
        width = feature.shape[3]
        per_cell = model.anchor_generator.num_cell_anchors[model.plan.levels.index(level)]
        own = self._own_cells(level, image_sizes)
        cell = torch.arange(cells, device=scores.device) // per_cell
        inside = (cell[None] // width < own[:, :1]) & (cell[None] % width < own[:, 1:])
        threshold = model.level_score_thresh(own[:, 0] * own[:, 1])
        flat = scores.flatten(1)
        eligible = inside[:, :, None].expand(-1, -1, num_classes).flatten(1) & (
            flat > threshold[:, None]
        )
        masked = torch.where(eligible, flat, torch.full_like(flat, -1.0))
        top_scores, top_indices = masked.topk(
            capped(flat.shape[1], model.test_topk_candidates), dim=1
        )
        anchor, classes = top_indices // num_classes, top_indices % num_classes
        images = torch.arange(batch, device=scores.device)[:, None]
        anchor_boxes = anchors[images, anchor] if anchors.dim() == 3 else anchors[anchor]
        landmarks = predictions.step2_landmarks
        boxes, points = decode_anchors(
            model.box2box_transform,
            model.landmark_coder,
            anchor_boxes,
            predictions.step2_deltas[level][images, anchor],
            None if landmarks is None else landmarks[level][images, anchor],
        )
        candidates = (boxes, top_scores, classes)
        return candidates if points is None else (*candidates, points)

    @staticmethod
    def _rank_in_image(batch_index: torch.Tensor, batch: int) -> torch.Tensor:
        """(N,) image of each detection, each image's best first -> its place among its image's
        detections (0 = best): the cap of Detectron2's NMS output, counted per image."""
        same = (batch_index[:, None] == torch.arange(batch, device=batch_index.device)[None]).long()
        return (same.cumsum(0) * same).sum(1) - 1

    @staticmethod
    def _clip(boxes: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """Detectron2's ``Boxes.clip`` to each box's own image: (N, 4) boxes, (N, 2) height, width."""
        limits = sizes.flip(1).repeat(1, 2).to(boxes.dtype)
        return torch.minimum(torch.clamp(boxes, min=0), limits)
