"""Anchor matching in bounded memory.

WIDER FACE images can hold over a thousand faces; a dense faces x anchors
IoU matrix at 1024x1024 (174,720 anchors) would take gigabytes. The matcher
below walks the anchors in chunks and gives the same answer as Detectron2's
:class:`Matcher` on the dense matrix.
"""
from typing import List, Tuple

import torch
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou


class ChunkedMatcher:
    """Detectron2's :class:`Matcher` over boxes, computing IoU ``max_elements`` at a time.

    One deliberate difference from the dense Matcher's low-quality rule: a face
    whose best IoU is 0 (it overlaps no anchor) promotes nothing, where the
    dense rule would make every anchor with IoU 0 to it positive.
    """

    def __init__(
        self,
        thresholds: List[float],
        labels: List[int],
        allow_low_quality_matches: bool = False,
        max_elements: int = 1 << 22,
    ):
        # The per-anchor labelling is Detectron2's; the per-face "best anchor"
        # rule needs the maximum over all chunks, so it is applied here.
        self.matcher = Matcher(thresholds, labels, allow_low_quality_matches=False)
        self.allow_low_quality_matches = allow_low_quality_matches
        self.max_elements = int(max_elements)

    def _chunks(self, num_gt: int, num_anchors: int):
        step = max(1, self.max_elements // max(num_gt, 1))
        return [(start, min(start + step, num_anchors)) for start in range(0, num_anchors, step)]

    @torch.no_grad()
    def __call__(self, gt_boxes: Boxes, anchors: Boxes) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Returns:
            matches (Tensor[int64]): index of each anchor's best ground-truth box.
            match_labels (Tensor[int8]): label of each anchor (see :class:`Matcher`).
        """
        num_gt, num_anchors = len(gt_boxes), len(anchors)
        if num_gt == 0:
            return self.matcher(anchors.tensor.new_zeros((0, num_anchors)))
        chunks = self._chunks(num_gt, num_anchors)
        best_iou_per_gt = None
        if self.allow_low_quality_matches:
            best_iou_per_gt = torch.stack(
                [pairwise_iou(gt_boxes, anchors[s:e]).max(dim=1).values for s, e in chunks]
            ).max(dim=0).values
            # IoU never exceeds 1: a face that overlaps no anchor gets a "best" no anchor equals.
            best_iou_per_gt = best_iou_per_gt.where(
                best_iou_per_gt > 0, torch.full_like(best_iou_per_gt, 2.0)
            )

        matches, labels = [], []
        for start, end in chunks:
            iou = pairwise_iou(gt_boxes, anchors[start:end])
            chunk_matches, chunk_labels = self.matcher(iou)
            if best_iou_per_gt is not None:
                is_best = (iou == best_iou_per_gt[:, None]).any(dim=0)
                chunk_labels[is_best] = 1
            matches.append(chunk_matches)
            labels.append(chunk_labels)
            del iou
        return torch.cat(matches), torch.cat(labels)
