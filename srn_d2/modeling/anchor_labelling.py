"""Labelling the anchors of both of SRN's steps, every image of a batch in one set of operations.

Faces are padded per image into one (N, M, 4) tensor with a mask of the real
ones, as Detectron2 pads images into an ImageList; the matcher labels all
images at once (:meth:`SparseGridMatcher.match_batch`) and the labels, boxes
and landmarks of each anchor's face are gathered from the padded tensors. No
count leaves the device here: a GPU is never made to wait on the host.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import Instances

from .levels import split_levels
from .matcher import AnchorLevel, SparseGridMatcher

__all__ = ["AnchorLabels", "FaceBatch", "label_anchors"]


@dataclass
class FaceBatch:
    """Each image's faces, padded to the most crowded image's M (at least 1).

    Attributes:
        boxes: (N, M, 4) XYXY, as annotated (matched unclipped); 0 for padding and left-out faces.
        classes: (N, M) int64.
        keypoints: (N, M, K, 3), or None.
        valid: (N, M) bool: a face with some area inside its image.
        num_outside_image: 0-dim int64: real faces left out for having no area inside
            their image (a face that overlaps no anchor would make every anchor its
            best match under the low-quality rule).
    """

    boxes: torch.Tensor
    classes: torch.Tensor
    keypoints: Optional[torch.Tensor]
    valid: torch.Tensor
    num_outside_image: torch.Tensor

    @classmethod
    def from_instances(
        cls, gt_instances: List[Instances], with_keypoints: bool = False
    ) -> "FaceBatch":
        """
        Args:
            gt_instances: per image, ``gt_boxes`` and ``gt_classes``, and ``gt_keypoints``
                with ``with_keypoints``.
        """
        size = max(1, max(len(x) for x in gt_instances))

        def padded(tensors, value=0.0):
            return torch.stack(
                [
                    F.pad(t, (0, 0) * (t.dim() - 1) + (0, size - len(t)), value=value)
                    for t in tensors
                ]
            )

        boxes = padded([x.gt_boxes.tensor.float() for x in gt_instances])
        # NaN padding fails every comparison below, so padding is never a valid face.
        clipped = padded(
            [_clipped(x.gt_boxes.tensor.float(), x.image_size) for x in gt_instances], float("nan")
        )
        real = ~clipped[..., 0].isnan()
        valid = (clipped[..., 2] > clipped[..., 0]) & (clipped[..., 3] > clipped[..., 1])
        keypoints = (
            padded([x.gt_keypoints.tensor for x in gt_instances]) if with_keypoints else None
        )
        return cls(
            boxes=torch.where(valid[..., None], boxes, 0.0),
            classes=padded([x.gt_classes for x in gt_instances]),
            keypoints=keypoints,
            valid=valid,
            num_outside_image=(real & ~valid).sum(),
        )


def _clipped(boxes: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
    """(M, 4) boxes clipped to the image, as ``Boxes.clip`` clips them, without its host check."""
    height, width = image_size
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    return torch.stack(
        (x1.clamp(0, width), y1.clamp(0, height), x2.clamp(0, width), y2.clamp(0, height)), dim=1
    )


def _anchor_levels(anchors: Dict[str, torch.Tensor], layouts) -> List[AnchorLevel]:
    """Grid levels as laid out; neighbouring per-image levels (STR's refined anchors) joined into
    one, which the matcher then takes in one dense block instead of one a level."""
    levels, free = [], []
    for level, boxes in anchors.items():
        if boxes.dim() == 3:
            free.append(boxes)
            continue
        if free:
            levels.append(AnchorLevel(torch.cat(free, dim=1)))
            free = []
        levels.append(AnchorLevel(boxes, *layouts[level]))
    if free:
        levels.append(AnchorLevel(torch.cat(free, dim=1)))
    return levels


@dataclass
class AnchorLabels:
    """What one step's matching gives each anchor, level by level.

    Attributes:
        labels: level -> (N, R_l): class index of positives, ``num_classes`` for
            background, -1 for ignored anchors.
        gt_boxes: level -> (N, R_l, 4): each anchor's matched box (meaningful for positives).
        gt_keypoints: level -> (N, R_l, K, 3), for a FaceBatch with keypoints; else None.
    """

    labels: Dict[str, torch.Tensor]
    gt_boxes: Dict[str, torch.Tensor]
    gt_keypoints: Optional[Dict[str, torch.Tensor]]


@torch.no_grad()
def label_anchors(
    anchors: Dict[str, torch.Tensor],
    faces: FaceBatch,
    matcher: SparseGridMatcher,
    layouts: Dict[str, Tuple[Tuple[int, int, int], int]],
    num_classes: int,
) -> AnchorLabels:
    """
    Args:
        anchors: level -> (R_l, 4) anchors on the level's grid, shared by all
            images, or (N, R_l, 4) per image (refined anchors, matched densely).
        faces: the batch's faces.
        matcher: the step's matcher.
        layouts: level -> ((H, W, A), stride) of its grid anchors.
        num_classes: the background label.
    """
    matches, match_labels = matcher.match_batch(
        faces.boxes, faces.valid, _anchor_levels(anchors, layouts)
    )
    has_faces = faces.valid.any(dim=1, keepdim=True)
    labels = faces.classes.gather(1, matches)
    labels = torch.where(match_labels == 0, num_classes, labels)
    labels = torch.where(match_labels == -1, -1, labels)
    labels = torch.where(has_faces, labels, num_classes)

    def gathered(per_face):
        index = matches.view(*matches.shape, *([1] * (per_face.dim() - 2)))
        return per_face.gather(1, index.expand(-1, -1, *per_face.shape[2:]))

    sizes = {level: a.shape[-2] for level, a in anchors.items()}
    return AnchorLabels(
        split_levels(labels, sizes),
        split_levels(gathered(faces.boxes), sizes),
        split_levels(gathered(faces.keypoints), sizes) if faces.keypoints is not None else None,
    )
