"""The SRN meta-architecture: RetinaNet-style dense detection in two selective steps.

* STC (Selective Two-step Classification) on the low levels: step 1 scores
  anchors from the C-features; anchors it is confident are background are
  dropped from step 2 in training and inference.
* STR (Selective Two-step Regression) on the high levels: step 1 regresses
  the anchors from the C-features, and step 2 matches, regresses and decodes
  against those refined anchors.
"""
import logging
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import batched_nms, cat
from detectron2.modeling import META_ARCH_REGISTRY, build_anchor_generator, build_backbone
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage
from fvcore.nn import sigmoid_focal_loss_jit, smooth_l1_loss

from ..config import check_iou_thresholds, require
from .backbone import level_indices
from .heads import build_srn_head
from .matcher import ChunkedMatcher
from .two_step_head import SelectiveTwoStepHead

logger = logging.getLogger(__name__)

__all__ = ["SRN"]


def _check_srn_keys(cfg) -> None:
    """Values of MODEL.SRN / TEST keys that would otherwise fail late or silently."""
    srn = cfg.MODEL.SRN
    require(0.0 <= srn.STC_NEG_THRESH <= 1.0, "MODEL.SRN.STC_NEG_THRESH", srn.STC_NEG_THRESH,
            "is a confidence and must lie in [0, 1] (1 keeps every anchor)")
    require(len(srn.IOU_LABELS) == 3 and set(srn.IOU_LABELS) <= {-1, 0, 1}, "MODEL.SRN.IOU_LABELS",
            srn.IOU_LABELS, "needs three labels from -1 (ignore), 0 (background), 1 (face)")
    require(srn.MATCHER_MAX_ELEMENTS > 0, "MODEL.SRN.MATCHER_MAX_ELEMENTS", srn.MATCHER_MAX_ELEMENTS,
            "must be positive")
    require(0.0 <= srn.SCORE_THRESH_TEST <= 1.0, "MODEL.SRN.SCORE_THRESH_TEST", srn.SCORE_THRESH_TEST,
            "must lie in [0, 1]")
    require(0.0 <= srn.NMS_THRESH_TEST <= 1.0, "MODEL.SRN.NMS_THRESH_TEST", srn.NMS_THRESH_TEST,
            "must lie in [0, 1]")
    require(srn.TOPK_CANDIDATES_TEST >= 1, "MODEL.SRN.TOPK_CANDIDATES_TEST", srn.TOPK_CANDIDATES_TEST,
            "must be at least 1")
    require(cfg.TEST.DETECTIONS_PER_IMAGE >= 1, "TEST.DETECTIONS_PER_IMAGE", cfg.TEST.DETECTIONS_PER_IMAGE,
            "must be at least 1")


@META_ARCH_REGISTRY.register()
class SRN(DenseDetector):
    """Selective Refinement Network (Chi et al., AAAI 2019)."""

    @configurable
    def __init__(
        self,
        *,
        backbone,
        head,
        anchor_generator,
        box2box_transform: Box2BoxTransform,
        step1_matcher: ChunkedMatcher,
        step2_matcher: ChunkedMatcher,
        num_classes: int,
        stc_levels: Sequence[int],
        str_levels: Sequence[int],
        stc_neg_thresh: float = 0.99,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        smooth_l1_beta: float = 0.1,
        loss_normalizer_momentum: float = 0.9,
        test_score_thresh: float = 0.05,
        test_topk_candidates: int = 2000,
        test_nms_thresh: float = 0.5,
        max_detections_per_image: int = 750,
        no_score_floor_below_cells: int = 0,
        legacy_plus_one: bool = False,
        pixel_mean,
        pixel_std,
    ):
        """
        Args:
            backbone: a backbone exposing ``step1_features`` and ``step2_features``
                (names of its C- and P-features, finest first), e.g. :class:`SRNBackbone`.
            head: the shared head (see ``SRN_HEAD_REGISTRY``).
            anchor_generator: anchors for the step-2 feature maps.
            box2box_transform: box coder for both steps.
            step1_matcher, step2_matcher: anchor labelling of each step.
            num_classes: number of foreground classes (1 for faces).
            stc_levels, str_levels: indices (0 = finest) of the levels with
                two-step classification / regression.
            stc_neg_thresh: anchors whose step-1 background confidence exceeds
                this leave step 2.
            focal_loss_alpha, focal_loss_gamma, smooth_l1_beta: loss parameters.
            loss_normalizer_momentum: EMA momentum of the positive counts that
                normalize each loss; 0 uses the batch's counts.
            test_score_thresh, test_topk_candidates: per-level candidate filter.
            test_nms_thresh, max_detections_per_image: final NMS and cap.
            no_score_floor_below_cells: levels with fewer cells than this skip
                ``test_score_thresh`` (the released model's behaviour).
            legacy_plus_one: NMS with (x2 - x1 + 1) areas, as the released model.
            pixel_mean, pixel_std: see :class:`DenseDetector`.
        """
        missing = [a for a in ("step1_features", "step2_features") if not hasattr(backbone, a)]
        if missing:
            raise TypeError(
                f"SRN needs a backbone with {missing} (C- and P-feature names), such as "
                f"build_srn_backbone; got {type(backbone).__name__}"
            )
        head = SelectiveTwoStepHead(head, stc_levels, str_levels)
        step1_features = [backbone.step1_features[i] for i in head.step1_levels]
        absent = [f for f in step1_features if f not in backbone.output_shape()]
        if absent:
            raise ValueError(f"STC/STR levels need C-features {absent}, which the backbone does not output")
        super().__init__(
            backbone,
            head,
            step1_features + backbone.step2_features,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
        )
        self.num_step1_features = len(step1_features)
        self.num_classes = num_classes
        self.stc_levels = sorted(stc_levels)
        self.str_levels = sorted(str_levels)
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.step1_matcher = step1_matcher
        self.step2_matcher = step2_matcher
        self.stc_neg_thresh = stc_neg_thresh
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_normalizer_momentum = loss_normalizer_momentum
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.max_detections_per_image = max_detections_per_image
        self.no_score_floor_below_cells = no_score_floor_below_cells
        self.legacy_plus_one = legacy_plus_one

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        step2_shapes = [shapes[f] for f in getattr(backbone, "step2_features", [])]
        anchor_generator = build_anchor_generator(cfg, step2_shapes)
        num_anchors = set(anchor_generator.num_cell_anchors)
        if len(num_anchors) != 1:
            raise ValueError(
                "SRN's shared head needs the same number of anchors on every level; "
                f"MODEL.ANCHOR_GENERATOR gives {anchor_generator.num_cell_anchors}"
            )
        srn = cfg.MODEL.SRN
        _check_srn_keys(cfg)

        def matcher(thresholds, key):
            return ChunkedMatcher(
                check_iou_thresholds(thresholds, key),
                srn.IOU_LABELS,
                allow_low_quality_matches=srn.ALLOW_LOW_QUALITY_MATCHES,
                max_elements=srn.MATCHER_MAX_ELEMENTS,
            )

        return {
            "backbone": backbone,
            "head": build_srn_head(cfg, step2_shapes[0], num_anchors.pop()),
            "anchor_generator": anchor_generator,
            "box2box_transform": Box2BoxTransform(
                weights=srn.BBOX_REG_WEIGHTS, scale_clamp=srn.BBOX_REG_SCALE_CLAMP
            ),
            "step1_matcher": matcher(srn.STEP1_IOU_THRESHOLDS, "MODEL.SRN.STEP1_IOU_THRESHOLDS"),
            "step2_matcher": matcher(srn.STEP2_IOU_THRESHOLDS, "MODEL.SRN.STEP2_IOU_THRESHOLDS"),
            "num_classes": srn.NUM_CLASSES,
            "stc_levels": level_indices(srn.STC_LEVELS, "MODEL.SRN.STC_LEVELS"),
            "str_levels": level_indices(srn.STR_LEVELS, "MODEL.SRN.STR_LEVELS"),
            "stc_neg_thresh": srn.STC_NEG_THRESH,
            "focal_loss_alpha": srn.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": srn.FOCAL_LOSS_GAMMA,
            "smooth_l1_beta": srn.SMOOTH_L1_LOSS_BETA,
            "loss_normalizer_momentum": srn.LOSS_NORMALIZER_MOMENTUM,
            "test_score_thresh": srn.SCORE_THRESH_TEST,
            "test_topk_candidates": srn.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": srn.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "no_score_floor_below_cells": srn.NO_SCORE_FLOOR_BELOW_CELLS,
            "legacy_plus_one": srn.LEGACY_PLUS_ONE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    # ------------------------------------------------------------------ shared pieces

    def _split_predictions(self, predictions):
        k = self.num_classes
        return self._transpose_dense_predictions(predictions, [k, 4, k, 4])

    def stc_keep(self, step1_logits: torch.Tensor) -> torch.Tensor:
        """Anchors that survive STC: step-1 background confidence <= stc_neg_thresh.

        Args:
            step1_logits: (..., K) step-1 logits.
        Returns:
            bool tensor of shape (...).
        """
        face_prob = step1_logits.sigmoid().max(dim=-1).values
        return face_prob >= 1.0 - self.stc_neg_thresh

    def refine(self, step1_deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """STR: step-2 anchors = anchors moved by the step-1 deltas, (..., 4)."""
        refined = self.box2box_transform.apply_deltas(step1_deltas.reshape(-1, 4), anchors.reshape(-1, 4))
        return refined.view(anchors.shape)

    def _level_masks(self, anchors: List[Boxes]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(R,) masks of the anchors on STC levels and on STR levels, levels concatenated."""
        device = anchors[0].device
        level_of_anchor = torch.repeat_interleave(
            torch.arange(len(anchors), device=device),
            torch.tensor([len(a) for a in anchors], device=device),
        )
        stc = torch.isin(level_of_anchor, torch.tensor(self.stc_levels, device=device, dtype=torch.long))
        str_ = torch.isin(level_of_anchor, torch.tensor(self.str_levels, device=device, dtype=torch.long))
        return stc, str_

    # ------------------------------------------------------------------ training

    def forward_training(self, images, features, predictions, gt_instances):
        step1_logits, step1_deltas, step2_logits, step2_deltas = self._split_predictions(predictions)
        anchors = self.anchor_generator(features[self.num_step1_features :])
        stc_mask, str_mask = self._level_masks(anchors)
        anchors = Boxes.cat(anchors).tensor
        num_images = len(gt_instances)

        step1_labels, step1_gt = self.label_anchors(
            [anchors] * num_images, gt_instances, self.step1_matcher
        )
        step2_anchors = anchors.expand(num_images, -1, -1).clone()
        step2_keep = torch.ones(step2_anchors.shape[:2], dtype=torch.bool, device=anchors.device)
        if self.str_levels:
            step2_anchors[:, str_mask] = self.refine(
                cat(step1_deltas, dim=1).detach(), step2_anchors[:, str_mask]
            )
        if self.stc_levels:
            step2_keep[:, stc_mask] = self.stc_keep(cat(step1_logits, dim=1).detach())
        step2_labels, step2_gt = self.label_anchors(step2_anchors, gt_instances, self.step2_matcher)

        storage = get_event_storage()
        storage.put_scalar("stc_kept_fraction", step2_keep[:, stc_mask].float().mean().item() if self.stc_levels else 1.0)
        zero = anchors.new_zeros(())
        losses = {"loss_cls_step1": zero, "loss_box_step1": zero}
        if self.stc_levels:
            losses["loss_cls_step1"] = self._classification_loss(
                cat(step1_logits, dim=1), step1_labels[:, stc_mask], "step1"
            )
        if self.str_levels:
            losses["loss_box_step1"] = self._box_loss(
                cat(step1_deltas, dim=1),
                anchors[str_mask].expand(num_images, -1, -1),
                step1_gt[:, str_mask],
                step1_labels[:, str_mask],
                "step1",
            )
        step2_labels = step2_labels.masked_fill(~step2_keep, -1)
        losses["loss_cls_step2"] = self._classification_loss(cat(step2_logits, dim=1), step2_labels, "step2")
        losses["loss_box_step2"] = self._box_loss(
            cat(step2_deltas, dim=1), step2_anchors, step2_gt, step2_labels, "step2"
        )
        return losses

    def _normalizer(self, name: str, num_positives: int) -> float:
        value = max(num_positives, 1)
        return self._ema_update(
            f"loss_normalizer_{name}", value, initial_value=value, momentum=self.loss_normalizer_momentum
        )

    def _classification_loss(self, logits, labels, step: str) -> torch.Tensor:
        """Sigmoid focal loss over the non-ignored anchors, per positive anchor."""
        valid = labels >= 0
        positive = valid & (labels != self.num_classes)
        num_pos = positive.sum().item()
        get_event_storage().put_scalar(f"num_pos_cls_{step}", num_pos / labels.shape[0])
        target = F.one_hot(labels[valid], num_classes=self.num_classes + 1)[:, :-1]
        loss = sigmoid_focal_loss_jit(
            logits[valid],
            target.to(logits.dtype),
            alpha=self.focal_loss_alpha,
            gamma=self.focal_loss_gamma,
            reduction="sum",
        )
        return loss / self._normalizer(f"cls_{step}", num_pos)

    def _box_loss(self, deltas, anchors, gt_boxes, labels, step: str) -> torch.Tensor:
        """Smooth L1 on the positive anchors' deltas, per positive anchor."""
        positive = (labels >= 0) & (labels != self.num_classes)
        target = self.box2box_transform.get_deltas(anchors[positive], gt_boxes[positive])
        loss = smooth_l1_loss(deltas[positive], target, beta=self.smooth_l1_beta, reduction="sum")
        return loss / self._normalizer(f"box_{step}", positive.sum().item())

    @torch.no_grad()
    def label_anchors(self, anchors, gt_instances: List[Instances], matcher: ChunkedMatcher):
        """
        Args:
            anchors: per image, an (R, 4) tensor of anchors (they differ between
                images once STR has refined them).
            gt_instances: per image, Instances with ``gt_boxes`` and ``gt_classes``.
            matcher: the step's matcher.

        Returns:
            labels (N, R): class index of positives, ``num_classes`` for
                background, -1 for ignored anchors.
            matched_gt_boxes (N, R, 4): each anchor's matched box (meaningful
                for positives only).
        """
        labels, matched_boxes = [], []
        for anchors_i, gt_i in zip(anchors, gt_instances):
            matches, match_labels = matcher(gt_i.gt_boxes, Boxes(anchors_i))
            if len(gt_i) > 0:
                labels_i = gt_i.gt_classes[matches].clone()
                labels_i[match_labels == 0] = self.num_classes
                labels_i[match_labels == -1] = -1
                boxes_i = gt_i.gt_boxes.tensor[matches]
            else:
                labels_i = torch.full_like(matches, self.num_classes)
                boxes_i = torch.zeros_like(anchors_i)
            labels.append(labels_i)
            matched_boxes.append(boxes_i)
        return torch.stack(labels), torch.stack(matched_boxes)

    # ------------------------------------------------------------------ inference

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        if self.training:
            return super().forward(batched_inputs)
        return self.inference(batched_inputs)

    def inference(self, batched_inputs: List[Dict[str, torch.Tensor]], do_postprocess: bool = True):
        """
        Args:
            batched_inputs: as in :meth:`forward`.
            do_postprocess: rescale the boxes to each input's "height" x "width",
                clip them to it and drop the empty ones (Detectron2's output
                format). Without, the boxes stay as decoded, in the coordinates
                of the input image: what the authors' multi-scale test merges.

        Returns:
            with ``do_postprocess``: ``[{"instances": Instances}]``; without: ``[Instances]``.
        """
        assert not self.training
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        features = [features[f] for f in self.head_in_features]
        results = self.forward_inference(images, features, self.head(features))
        if not do_postprocess:
            return results
        return [
            {"instances": detector_postprocess(r, x.get("height", size[0]), x.get("width", size[1]))}
            for r, x, size in zip(results, batched_inputs, images.image_sizes)
        ]

    def forward_inference(self, images: ImageList, features, predictions):
        step1_logits, step1_deltas, step2_logits, step2_deltas = self._split_predictions(predictions)
        anchors = self.anchor_generator(features[self.num_step1_features :])
        return [
            self.inference_single_image(
                anchors,
                [x[i] for x in step1_logits],
                [x[i] for x in step1_deltas],
                [x[i] for x in step2_logits],
                [x[i] for x in step2_deltas],
                image_size,
            )
            for i, image_size in enumerate(images.image_sizes)
        ]

    def inference_single_image(
        self,
        anchors: List[Boxes],
        step1_logits: List[torch.Tensor],
        step1_deltas: List[torch.Tensor],
        step2_logits: List[torch.Tensor],
        step2_deltas: List[torch.Tensor],
        image_size: Tuple[int, int],
    ) -> Instances:
        """Decode one image: STC filter, STR refinement, step-2 decoding, NMS."""
        stc_of_level = {level: i for i, level in enumerate(self.stc_levels)}
        str_of_level = {level: i for i, level in enumerate(self.str_levels)}
        per_level = []
        for level, (anchors_l, logits_l, deltas_l) in enumerate(zip(anchors, step2_logits, step2_deltas)):
            scores = logits_l.sigmoid()
            if level in stc_of_level:
                scores = scores * self.stc_keep(step1_logits[stc_of_level[level]])[:, None]
            if level in str_of_level:
                anchors_l = Boxes(self.refine(step1_deltas[str_of_level[level]], anchors_l.tensor))
            num_cells = len(anchors_l) // self.anchor_generator.num_cell_anchors[level]
            # Scores are > 0 after a sigmoid; STC's dropped anchors are exactly 0.
            thresh = 0.0 if num_cells < self.no_score_floor_below_cells else self.test_score_thresh
            per_level.append(
                self._decode_per_level_predictions(
                    anchors_l, scores, deltas_l, thresh, self.test_topk_candidates, image_size
                )
            )
        pred = Instances.cat(per_level)
        boxes = pred.pred_boxes.tensor
        if self.legacy_plus_one:
            # IoU with (x2 - x1 + 1) areas equals plain IoU of boxes grown by one pixel.
            boxes = boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])
        keep = batched_nms(boxes, pred.scores, pred.pred_classes, self.test_nms_thresh)
        return pred[keep[: self.max_detections_per_image]]
