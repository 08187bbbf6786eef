"""SRN's losses: focal loss of each step's classification, smooth L1 of each step's regression
and, with landmarks, of step 2's landmarks, each divided by a running count of positives.

Sums are taken over every anchor with a mask (a loss term of an anchor that
does not count is replaced by 0), never over a boolean selection: a selection's
size is a count the host would have to read, and on a GPU each such read stalls
the queue of kernels. Counts stay tensors; the running normalizers too.
"""

from typing import Dict, Optional, Tuple

import torch
from fvcore.nn import sigmoid_focal_loss, smooth_l1_loss

from ..errors import require
from .anchor_labelling import AnchorLabels
from .box_regression import SingleBoxTransform
from .landmarks import LandmarkCoder, landmark_loss
from .levels import LevelPlan, cat_levels, cat_levels_per_image
from .two_step_head import TwoStepPredictions

__all__ = ["LOSS_NORMALIZATIONS", "SRNLosses", "box_loss", "classification_loss"]

LOSS_NORMALIZATIONS = ("per_step", "per_loss", "step2")


def is_positive(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return (labels >= 0) & (labels != num_classes)


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_classes: int, alpha: float, gamma: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid focal loss summed over the non-ignored anchors, and the number of positives.

    Args:
        logits: (N, R, K); labels: (N, R), ``num_classes`` for background, -1 ignored.
    Returns:
        the sum (float32, also under mixed precision: it adds ~10^5 anchors' terms) and a
        0-dim int64 count.
    """
    valid = labels >= 0
    # One-hot by comparison: F.one_hot reads the labels' range on the host to check it.
    target = labels[..., None] == torch.arange(num_classes, device=labels.device)
    loss = sigmoid_focal_loss(
        logits.float(), target.float(), alpha=alpha, gamma=gamma, reduction="none"
    )
    return torch.where(valid[..., None], loss, 0.0).sum(), is_positive(labels, num_classes).sum()


def box_loss(
    deltas: torch.Tensor,
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    positive: torch.Tensor,
    box2box_transform: SingleBoxTransform,
    beta: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Smooth L1 summed over the positive anchors' deltas, and their number.

    Args:
        deltas, anchors, gt_boxes: (N, R, 4); positive: (N, R) bool.
    """
    # Other anchors are coded against themselves: finite targets that the mask then drops.
    target = box2box_transform.get_deltas(
        anchors, torch.where(positive[..., None], gt_boxes, anchors)
    )
    loss = smooth_l1_loss(deltas.float(), target, beta=beta, reduction="none")
    return torch.where(positive[..., None], loss, 0.0).sum(), positive.sum()


class SRNLosses:
    """The four losses of SRN's two steps (five with landmarks) and their running normalizers."""

    def __init__(
        self,
        plan: LevelPlan,
        num_classes: int,
        box2box_transform: SingleBoxTransform,
        landmark_coder: LandmarkCoder,
        *,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        smooth_l1_beta: float = 0.1,
        normalizer_momentum: float = 0.9,
        normalization: str = "per_step",
        landmark_loss_weight: float = 0.5,
    ):
        """
        Args:
            plan: which levels take step-1 classification (STC) and regression (STR).
            num_classes: foreground classes; label ``num_classes`` is background.
            box2box_transform, landmark_coder: the box and landmark coding.
            focal_loss_alpha, focal_loss_gamma, smooth_l1_beta: loss parameters.
            normalizer_momentum: EMA momentum of the positive counts that normalize each
                loss; 0 uses the batch's counts.
            normalization: "per_step": both step-1 losses by N_s1 (step 1's positives on the
                levels it trains), both step-2 losses by N_s2 (the paper); "per_loss": each
                loss by its own positives; "step2": all four by N_s2.
            landmark_loss_weight: weight of the landmark loss.
        """
        require(
            normalization in LOSS_NORMALIZATIONS,
            "MODEL.SRN.LOSS_NORMALIZATION",
            normalization,
            f"(argument loss_normalization) must be one of {LOSS_NORMALIZATIONS}",
        )
        self.plan = plan
        self.num_classes = num_classes
        self.box2box_transform = box2box_transform
        self.landmark_coder = landmark_coder
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.smooth_l1_beta = smooth_l1_beta
        self.normalizer_momentum = normalizer_momentum
        self.normalization = normalization
        self.landmark_loss_weight = landmark_loss_weight
        # Running positive counts by name, float64 0-dim tensors on the model's device.
        self.normalizers: Dict[str, torch.Tensor] = {}

    def __call__(
        self,
        anchors: Dict[str, torch.Tensor],
        step2_anchors: Dict[str, torch.Tensor],
        predictions: TwoStepPredictions,
        step1: AnchorLabels,
        step2: AnchorLabels,
    ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """
        Step 1 is trained on the STC levels (classification) and the STR levels
        (regression) against the grid anchors; step 2 on every level against its
        step-2 anchors. The landmark loss trains the step-2 positives whose face has
        landmarks and is divided by their own running count: a dataset where some
        faces have none (a sixth of WIDER FACE's) does not weaken it.

        Args:
            anchors: level -> (R_l, 4) grid anchors.
            step2_anchors: level -> (R_l, 4) or (N, R_l, 4), see
                :meth:`SelectiveTwoStepRegression.step2_anchors`.
            predictions: flattened, (N, R_l, K) logits, (N, R_l, 4) deltas and
                (N, R_l, 2 * landmarks) landmark offsets per level.
            step1, step2: each step's labels (step 2's with ``gt_keypoints`` for landmarks).

        Returns:
            the losses (``loss_cls_step1``, ``loss_box_step1``, 0 without STC / STR levels,
            ``loss_cls_step2``, ``loss_box_step2``, and ``loss_landmarks`` with landmarks),
            and the positives of each classification loss per image (0-dim tensors).
        """
        plan, num_classes = self.plan, self.num_classes
        num_images = next(iter(step1.labels.values())).shape[0]
        sums, positives = {}, {}
        if plan.stc_levels:
            sums["cls_step1"], positives["cls_step1"] = self._classification(
                predictions.step1_logits, step1.labels, plan.stc_levels
            )
        if plan.str_levels:
            labels = cat_levels(step1.labels, plan.str_levels)
            sums["box_step1"], positives["box_step1"] = box_loss(
                cat_levels(predictions.step1_deltas, plan.str_levels),
                cat_levels_per_image(anchors, plan.str_levels, num_images),
                cat_levels(step1.gt_boxes, plan.str_levels),
                is_positive(labels, num_classes),
                self.box2box_transform,
                self.smooth_l1_beta,
            )
        step2_labels = cat_levels(step2.labels, plan.levels)
        step2_positive = is_positive(step2_labels, num_classes)
        step2_anchors_all = cat_levels_per_image(step2_anchors, plan.levels, num_images)
        sums["cls_step2"], positives["cls_step2"] = self._classification(
            predictions.step2_logits, step2.labels, plan.levels
        )
        sums["box_step2"], positives["box_step2"] = box_loss(
            cat_levels(predictions.step2_deltas, plan.levels),
            step2_anchors_all,
            cat_levels(step2.gt_boxes, plan.levels),
            step2_positive,
            self.box2box_transform,
            self.smooth_l1_beta,
        )
        normalizers = self._loss_normalizers(positives, step1.labels)
        zero = predictions.step2_logits[plan.levels[0]].new_zeros((), dtype=torch.float32)
        losses = {
            f"loss_{name}": sums[name] / normalizers[name] if name in sums else zero
            for name in ("cls_step1", "box_step1", "cls_step2", "box_step2")
        }
        if predictions.step2_landmarks is not None:
            keypoints = cat_levels(step2.gt_keypoints, plan.levels)
            trained = step2_positive & (keypoints[..., 2] > 0).any(dim=-1)
            landmark_sum = landmark_loss(
                cat_levels(predictions.step2_landmarks, plan.levels),
                step2_anchors_all,
                keypoints,
                self.landmark_coder,
                self.smooth_l1_beta,
                trained,
            )
            losses["loss_landmarks"] = (
                self.landmark_loss_weight
                * landmark_sum
                / self._normalizer("landmarks", trained.sum())
            )
        stats = {
            f"num_pos_{name}": positives[name] / num_images
            for name in ("cls_step1", "cls_step2")
            if name in positives
        }
        return losses, stats

    def _classification(self, logits, labels, levels) -> Tuple[torch.Tensor, torch.Tensor]:
        return classification_loss(
            cat_levels(logits, levels),
            cat_levels(labels, levels),
            self.num_classes,
            self.focal_loss_alpha,
            self.focal_loss_gamma,
        )

    def _loss_normalizers(
        self, positives: Dict[str, torch.Tensor], step1_labels: Dict[str, torch.Tensor]
    ) -> Dict[str, torch.Tensor]:
        """The running positive count each loss is divided by (see ``normalization``).

        Args:
            positives: loss name -> its positive anchors in this batch (0-dim).
            step1_labels: level -> (N, R_l) step-1 labels.
        """
        if self.normalization == "per_loss":
            return {name: self._normalizer(name, count) for name, count in positives.items()}
        # N_s2: step 2's positives; its two losses count the same anchors.
        normalizers = {"step2": self._normalizer("step2", positives["cls_step2"])}
        if self.normalization == "step2":
            return {name: normalizers["step2"] for name in positives}
        if self.plan.step1_levels:
            # N_s1: step 1's positive anchors on every level a step-1 loss reads, each counted once.
            num_step1 = is_positive(
                cat_levels(step1_labels, self.plan.step1_levels), self.num_classes
            ).sum()
            normalizers["step1"] = self._normalizer("step1", num_step1)
        return {name: normalizers[name.rsplit("_", 1)[1]] for name in positives}

    def _normalizer(self, name: str, num_positives: torch.Tensor) -> torch.Tensor:
        """The EMA of ``max(num_positives, 1)``, starting from the first value, in float64 as
        Detectron2's ``_ema_update`` keeps it in a Python float; returned as float32."""
        value = num_positives.clamp(min=1).double()
        old: Optional[torch.Tensor] = self.normalizers.get(name, value)
        new = old * self.normalizer_momentum + value * (1 - self.normalizer_momentum)
        self.normalizers[name] = new
        return new.float()
