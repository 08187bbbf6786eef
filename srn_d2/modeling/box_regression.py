"""SRN's box coder: Detectron2's Box2BoxTransform for one box per anchor, any leading shape.

SRN regresses one class-agnostic box per anchor, so its deltas are (..., 4).
Detectron2's ``apply_deltas`` takes (N, k * 4) deltas and ends with
``reshape(deltas.shape)``; exported, that reshape reads its target shape from
the graph, and onnxruntime's ReshapeFusion (on by default) folds it into
(0, -1), which fails on an empty tensor: an int8 SRN then crashes on every
image with no candidate above the score threshold. Decoding (..., 4) directly
needs no reshape, takes the batched (B, R, 4) deltas of the batched export and
gives Detectron2's numbers bit for bit: the same operations in the same order.
"""

import torch
from detectron2.modeling.box_regression import Box2BoxTransform

__all__ = ["SingleBoxTransform"]


class SingleBoxTransform(Box2BoxTransform):
    """Box2BoxTransform whose ``apply_deltas`` and ``get_deltas`` code one box per row of (..., 4)."""

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """Detectron2's coding, operation for operation, of (..., 4) boxes, without its check
        that every source box has a positive width: a value the host would read, stalling a
        GPU in every training step. Anchors and STR's refined anchors (exp of a delta times a
        positive width) have positive widths.

        Args:
            src_boxes, target_boxes: (..., 4) x1, y1, x2, y2.
        Returns:
            (..., 4) dx, dy, dw, dh.
        """
        src_widths = src_boxes[..., 2] - src_boxes[..., 0]
        src_heights = src_boxes[..., 3] - src_boxes[..., 1]
        src_ctr_x = src_boxes[..., 0] + 0.5 * src_widths
        src_ctr_y = src_boxes[..., 1] + 0.5 * src_heights

        target_widths = target_boxes[..., 2] - target_boxes[..., 0]
        target_heights = target_boxes[..., 3] - target_boxes[..., 1]
        target_ctr_x = target_boxes[..., 0] + 0.5 * target_widths
        target_ctr_y = target_boxes[..., 1] + 0.5 * target_heights

        wx, wy, ww, wh = self.weights
        dx = wx * (target_ctr_x - src_ctr_x) / src_widths
        dy = wy * (target_ctr_y - src_ctr_y) / src_heights
        dw = ww * torch.log(target_widths / src_widths)
        dh = wh * torch.log(target_heights / src_heights)
        return torch.stack((dx, dy, dw, dh), dim=-1)

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """
        Args:
            deltas: (..., 4) dx, dy, dw, dh.
            boxes: (..., 4) x1, y1, x2, y2, broadcastable to ``deltas``.
        Returns:
            (..., 4) decoded boxes, float32 as Detectron2's.
        """
        deltas = deltas.float()
        boxes = boxes.to(deltas.dtype)

        widths = boxes[..., 2] - boxes[..., 0]
        heights = boxes[..., 3] - boxes[..., 1]
        ctr_x = boxes[..., 0] + 0.5 * widths
        ctr_y = boxes[..., 1] + 0.5 * heights

        wx, wy, ww, wh = self.weights
        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        dw = torch.clamp(deltas[..., 2] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[..., 3] / wh, max=self.scale_clamp)

        pred_ctr_x = dx * widths + ctr_x
        pred_ctr_y = dy * heights + ctr_y
        pred_w = torch.exp(dw) * widths
        pred_h = torch.exp(dh) * heights
        return torch.stack(
            (
                pred_ctr_x - 0.5 * pred_w,
                pred_ctr_y - 0.5 * pred_h,
                pred_ctr_x + 0.5 * pred_w,
                pred_ctr_y + 0.5 * pred_h,
            ),
            dim=-1,
        )
