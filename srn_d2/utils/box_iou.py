"""IoU of aligned box pairs, the one torch restatement srn_d2's model side uses.

Detectron2's ``pairwise_iou`` gives the (N, M) matrix; the sparse matcher,
the anchor statistics and the multi-scale test's vote need the IoU of given
pairs, and the vote needs the released code's "+1" areas. The arithmetic is
``pairwise_iou``'s, operation for operation, so that a pair's value equals the
dense matrix's bit for bit. (The numpy-only WIDER FACE evaluation keeps its
own ``official_iou``: it must run without torch.)
"""

from typing import Optional

import torch

__all__ = ["box_areas", "aligned_iou"]


def box_areas(boxes: torch.Tensor, plus_one: bool = False) -> torch.Tensor:
    """(...,) areas of (..., 4) boxes (x1, y1, x2, y2); ``plus_one``: (x2 - x1 + 1) * (y2 - y1 + 1)."""
    if plus_one:
        return (boxes[..., 2] - boxes[..., 0] + 1) * (boxes[..., 3] - boxes[..., 1] + 1)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def aligned_iou(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    area_a: Optional[torch.Tensor] = None,
    area_b: Optional[torch.Tensor] = None,
    plus_one: bool = False,
) -> torch.Tensor:
    """IoU of box ``a[i]`` with box ``b[i]``, broadcasting: (N, 4) and (N, 4), or (1, 4) and (N, 4).

    Args:
        a, b: boxes (x1, y1, x2, y2).
        area_a, area_b: their areas, if already known (:func:`box_areas`).
        plus_one: boxes are inclusive pixel indices: sides are x2 - x1 + 1.
    Returns:
        (N,) IoUs; 0 where the boxes do not overlap.
    """
    width_height = torch.min(a[..., 2:], b[..., 2:]) - torch.max(a[..., :2], b[..., :2])
    if plus_one:
        width_height = width_height + 1
    inter = width_height.clamp(min=0).prod(dim=-1)
    area_a = box_areas(a, plus_one) if area_a is None else area_a
    area_b = box_areas(b, plus_one) if area_b is None else area_b
    zero = torch.zeros((), dtype=inter.dtype, device=inter.device)
    return torch.where(inter > 0, inter / (area_a + area_b - inter), zero)
