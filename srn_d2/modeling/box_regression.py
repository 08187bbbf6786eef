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
    """Box2BoxTransform whose ``apply_deltas`` decodes one box per row of (..., 4) deltas."""

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
            (pred_ctr_x - 0.5 * pred_w, pred_ctr_y - 0.5 * pred_h, pred_ctr_x + 0.5 * pred_w,
             pred_ctr_y + 0.5 * pred_h),
            dim=-1,
        )
