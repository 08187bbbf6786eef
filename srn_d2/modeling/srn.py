"""The SRN meta-architecture: RetinaNet-style dense detection in two selective steps.

SRN is the composition of its parts: a backbone with two feature pyramids
(``backbone.py``), a shared head with RFE (``heads.py``, ``rfe.py``) run on
both pyramids (``two_step_head.py``), Selective Two-step Classification
(``selective_classification.py``) and Regression (``selective_regression.py``),
a matcher per step (``matcher.py``) that labels every image of a batch at once
(``anchor_labelling.py``), and the four losses (five with landmarks,
``srn_losses.py``). This module wires them together and decodes detections.

Tensors are kept per level, in dicts keyed by level name ("p2".."p7"); which
level takes which step is the :class:`LevelPlan` shared with the backbone and
the head. Shapes below: N images, R_l anchors on level l (H_l * W_l * A),
K classes.
"""

import logging
from typing import Dict, List, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import batched_nms
from detectron2.modeling import META_ARCH_REGISTRY, build_anchor_generator, build_backbone
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.dense_detector import DenseDetector, permute_to_N_HWA_K
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import log_every_n_seconds

from ..errors import require, require_iou_thresholds
from .box_regression import SingleBoxTransform
from .decoding import decode_level
from .heads import build_srn_head
from .landmarks import LandmarkCoder
from .levels import LevelPlan
from .anchor_labelling import FaceBatch, label_anchors
from .matcher import SparseGridMatcher
from .selective_classification import SelectiveTwoStepClassification
from .selective_regression import SelectiveTwoStepRegression
from .srn_losses import SRNLosses
from .two_step_head import SelectiveTwoStepHead, TwoStepPredictions

logger = logging.getLogger(__name__)

__all__ = ["SRN"]


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
        step1_matcher: SparseGridMatcher,
        step2_matcher: SparseGridMatcher,
        num_classes: int,
        plan: LevelPlan,
        stc_min_face_prob: float = 0.01,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        smooth_l1_beta: float = 0.1,
        loss_normalizer_momentum: float = 0.9,
        loss_normalization: str = "per_step",
        test_score_thresh: float = 0.05,
        test_topk_candidates: int = 2000,
        test_nms_thresh: float = 0.5,
        max_detections_per_image: int = 750,
        test_score_thresh_min_cells: int = 0,
        nms_area_plus_one: bool = False,
        landmark_loss_weight: float = 0.5,
        pixel_mean,
        pixel_std,
    ):
        """
        Args:
            backbone: a backbone whose outputs include the plan's features
                (``plan.head_in_features``), e.g. :class:`SRNBackbone`.
            head: the shared head (see ``SRN_HEAD_REGISTRY``).
            anchor_generator: anchors for the P-feature maps.
            box2box_transform: box coder for both steps; a Detectron2
                Box2BoxTransform decodes through a :class:`SingleBoxTransform`
                of its weights (the same numbers, one box per anchor).
            step1_matcher, step2_matcher: anchor labelling of each step.
            num_classes: number of foreground classes (1 for faces).
            plan: which levels take two-step classification / regression.
            stc_min_face_prob: anchors of STC levels whose step-1 face probability
                is below this leave step 2.
            focal_loss_alpha, focal_loss_gamma, smooth_l1_beta: loss parameters.
            loss_normalizer_momentum: EMA momentum of the positive counts that
                normalize each loss; 0 uses the batch's counts.
            loss_normalization: "per_step": both step-1 losses by N_s1 (step 1's
                positives on the levels it trains), both step-2 losses by N_s2 (the
                paper); "per_loss": each loss by its own positives; "step2": all four
                by N_s2.
            test_score_thresh, test_topk_candidates: per-level candidate filter
                (score above the threshold, then the best ``test_topk_candidates``
                of each level).
            test_nms_thresh, max_detections_per_image: final NMS and cap.
            test_score_thresh_min_cells: ``test_score_thresh`` applies to levels
                with at least this many cells (the released model: 120).
            nms_area_plus_one: NMS with (x2 - x1 + 1) areas, as the released model.
            landmark_loss_weight: weight of the landmark loss, for a head that predicts
                landmarks (``head.num_landmarks``).
            pixel_mean, pixel_std: see :class:`DenseDetector`.
        """
        absent = [f for f in plan.head_in_features if f not in backbone.output_shape()]
        require(
            not absent,
            "MODEL.SRN.STC_LEVELS / STR_LEVELS",
            [plan.stc_levels, plan.str_levels],
            f"need features {absent}, which the backbone {type(backbone).__name__} does not output "
            f"(it has {sorted(backbone.output_shape())})",
        )
        super().__init__(
            backbone,
            SelectiveTwoStepHead(head, plan),
            plan.head_in_features,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
        )
        self.plan = plan
        self.num_classes = num_classes
        # Anchors and their labels.
        self.anchor_generator = anchor_generator
        if not isinstance(box2box_transform, SingleBoxTransform):
            box2box_transform = SingleBoxTransform(
                box2box_transform.weights, box2box_transform.scale_clamp
            )
        self.box2box_transform = box2box_transform
        self.landmark_coder = LandmarkCoder(tuple(box2box_transform.weights[:2]))
        self.step1_matcher = step1_matcher
        self.step2_matcher = step2_matcher
        # SRN's two ideas.
        self.stc = SelectiveTwoStepClassification(plan.stc_levels, stc_min_face_prob)
        self.str = SelectiveTwoStepRegression(plan.str_levels, self.box2box_transform)
        self.loss = SRNLosses(
            plan,
            num_classes,
            box2box_transform,
            self.landmark_coder,
            focal_loss_alpha=focal_loss_alpha,
            focal_loss_gamma=focal_loss_gamma,
            smooth_l1_beta=smooth_l1_beta,
            normalizer_momentum=loss_normalizer_momentum,
            normalization=loss_normalization,
            landmark_loss_weight=landmark_loss_weight,
        )
        # Inference parameters:
        require(
            0.0 <= test_score_thresh <= 1.0,
            "MODEL.SRN.SCORE_THRESH_TEST",
            test_score_thresh,
            "(argument test_score_thresh) must lie in [0, 1]",
        )
        require(
            0.0 <= test_nms_thresh <= 1.0,
            "MODEL.SRN.NMS_THRESH_TEST",
            test_nms_thresh,
            "(argument test_nms_thresh) must lie in [0, 1]",
        )
        require(
            test_topk_candidates >= 1,
            "MODEL.SRN.TOPK_CANDIDATES_TEST",
            test_topk_candidates,
            "(argument test_topk_candidates) must be at least 1",
        )
        require(
            max_detections_per_image >= 1,
            "TEST.DETECTIONS_PER_IMAGE",
            max_detections_per_image,
            "(argument max_detections_per_image) must be at least 1",
        )
        self.test_score_thresh = test_score_thresh
        self.test_score_thresh_min_cells = test_score_thresh_min_cells
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.nms_area_plus_one = nms_area_plus_one
        self.max_detections_per_image = max_detections_per_image

    @classmethod
    def from_config(cls, cfg):
        srn = cfg.MODEL.SRN
        plan = LevelPlan.from_config(cfg)
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        level_shapes = [shapes[level] for level in plan.levels if level in shapes]
        anchor_generator = build_anchor_generator(cfg, level_shapes)
        num_anchors = set(anchor_generator.num_cell_anchors)
        require(
            len(num_anchors) == 1,
            "MODEL.ANCHOR_GENERATOR",
            anchor_generator.num_cell_anchors,
            "SRN's shared head needs the same number of anchors on every level",
        )

        def matcher(thresholds, key):
            return SparseGridMatcher(
                require_iou_thresholds(thresholds, key),
                srn.IOU_LABELS,
                allow_low_quality_matches=srn.ALLOW_LOW_QUALITY_MATCHES,
                max_pairs=srn.MATCHER_MAX_PAIRS,
            )

        return {
            "backbone": backbone,
            "head": build_srn_head(cfg, level_shapes[0], num_anchors.pop()),
            "anchor_generator": anchor_generator,
            "box2box_transform": SingleBoxTransform(
                weights=srn.BBOX_REG_WEIGHTS, scale_clamp=srn.BBOX_REG_SCALE_CLAMP
            ),
            "step1_matcher": matcher(srn.STEP1_IOU_THRESHOLDS, "MODEL.SRN.STEP1_IOU_THRESHOLDS"),
            "step2_matcher": matcher(srn.STEP2_IOU_THRESHOLDS, "MODEL.SRN.STEP2_IOU_THRESHOLDS"),
            "num_classes": srn.NUM_CLASSES,
            "plan": plan,
            "stc_min_face_prob": srn.STC_MIN_FACE_PROB,
            "focal_loss_alpha": srn.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": srn.FOCAL_LOSS_GAMMA,
            "smooth_l1_beta": srn.SMOOTH_L1_LOSS_BETA,
            "loss_normalizer_momentum": srn.LOSS_NORMALIZER_MOMENTUM,
            "loss_normalization": srn.LOSS_NORMALIZATION,
            "test_score_thresh": srn.SCORE_THRESH_TEST,
            "test_topk_candidates": srn.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": srn.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "test_score_thresh_min_cells": srn.SCORE_THRESH_TEST_MIN_CELLS,
            "nms_area_plus_one": srn.NMS_AREA_PLUS_ONE,
            "landmark_loss_weight": srn.LANDMARKS.LOSS_WEIGHT,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    # ------------------------------------------------------------------ the two steps

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """As :class:`DenseDetector`, with features kept by name for the two steps."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        return self.forward_training(images, features, self.head(features), gt_instances)

    @property
    def num_landmarks(self) -> int:
        """Points per face in ``pred_keypoints``; 0 without landmarks."""
        return self.head.num_landmarks

    def flatten_predictions(self, predictions: TwoStepPredictions) -> TwoStepPredictions:
        """Maps (N, A * K, H, W) -> (N, H * W * A, K), per level; landmarks to (N, H * W * A, 10)."""
        k = self.num_classes
        return TwoStepPredictions(
            *(
                None
                if maps is None
                else {level: permute_to_N_HWA_K(x, dim) for level, x in maps.items()}
                for maps, dim in zip(predictions, (k, 4, k, 4, 2 * self.num_landmarks))
            )
        )

    def level_anchors(self, features: Dict[str, torch.Tensor]) -> Dict[str, Boxes]:
        """The anchors of every level, (R_l, 4) each, on the P-feature grids."""
        levels = self.plan.levels
        return dict(zip(levels, self.anchor_generator([features[level] for level in levels])))

    # ------------------------------------------------------------------ training

    def forward_training(self, images, features, predictions: TwoStepPredictions, gt_instances):
        """
        Args:
            images: the batch (unused: anchors come from the feature sizes).
            features: the backbone's outputs by name.
            predictions: the head's outputs, (N, A * K or A * 4, H_l, W_l) per level.
            gt_instances: per image, Instances with ``gt_boxes`` and ``gt_classes``, and
                ``gt_keypoints`` with landmarks.

        Returns:
            dict with ``loss_cls_step1``, ``loss_box_step1`` (0 without STC / STR
            levels), ``loss_cls_step2``, ``loss_box_step2``, and ``loss_landmarks``
            with landmarks.
        """
        predictions = self.flatten_predictions(predictions)
        anchors = {level: boxes.tensor for level, boxes in self.level_anchors(features).items()}
        layouts = self._grid_layouts(features)
        faces = FaceBatch.from_instances(gt_instances, with_keypoints=self.num_landmarks > 0)
        step1 = label_anchors(anchors, faces, self.step1_matcher, layouts, self.num_classes)
        step1_deltas = {level: d.detach() for level, d in predictions.step1_deltas.items()}
        step2_anchors = self.str.step2_anchors(anchors, step1_deltas)
        step2 = label_anchors(step2_anchors, faces, self.step2_matcher, layouts, self.num_classes)
        step2.labels, kept_fraction = self.stc.ignore_rejected(
            step2.labels, predictions.step1_logits
        )
        losses, stats = self.loss(anchors, step2_anchors, predictions, step1, step2)
        self._put_scalars(
            {
                **stats,
                "stc_kept_fraction": kept_fraction,
                "num_faces_outside_image": faces.num_outside_image,
            }
        )
        return losses

    def _grid_layouts(
        self, features: Dict[str, torch.Tensor]
    ) -> Dict[str, Tuple[Tuple[int, int, int], int]]:
        """Each level's grid anchor layout for the sparse matcher: ((H, W, A), stride)."""
        return {
            level: ((*features[level].shape[-2:], num_cell), self.plan.stride(level))
            for level, num_cell in zip(self.plan.levels, self.anchor_generator.num_cell_anchors)
        }

    @staticmethod
    def _put_scalars(stats: Dict[str, torch.Tensor]) -> None:
        """The step's counts to the event storage, read from the device in one transfer."""
        values = torch.stack([v.float() for v in stats.values()]).tolist()
        storage = get_event_storage()
        for name, value in zip(stats, values):
            storage.put_scalar(name, value)
        if values[list(stats).index("num_faces_outside_image")]:
            log_every_n_seconds(
                logging.WARNING,
                "left out faces with no area inside their image "
                "(counted in num_faces_outside_image)",
                n=60,
            )

    # ------------------------------------------------------------------ inference

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
        results = self.forward_inference(images, features, self.head(features))
        if not do_postprocess:
            return results
        return [
            {
                "instances": detector_postprocess(
                    r, x.get("height", size[0]), x.get("width", size[1])
                )
            }
            for r, x, size in zip(results, batched_inputs, images.image_sizes)
        ]

    def forward_inference(
        self, images: ImageList, features, predictions: TwoStepPredictions
    ) -> List[Instances]:
        predictions = self.flatten_predictions(predictions)
        anchors = self.level_anchors(features)
        return [
            self.inference_single_image(
                anchors,
                TwoStepPredictions(
                    *(
                        None if maps is None else {k: v[i] for k, v in maps.items()}
                        for maps in predictions
                    )
                ),
                size,
            )
            for i, size in enumerate(images.image_sizes)
        ]

    def inference_single_image(
        self,
        anchors: Dict[str, Boxes],
        predictions: TwoStepPredictions,
        image_size: Tuple[int, int],
    ) -> Instances:
        """Detections of one image: STC filter, STR refinement, step-2 decoding, NMS.

        Args:
            anchors: level -> Boxes (R_l, 4).
            predictions: one image's, (R_l, K) logits and (R_l, 4) deltas per level.
            image_size: (height, width) of the image.

        Returns:
            Instances with ``pred_boxes`` (unclipped), ``scores``, ``pred_classes``,
            and with landmarks ``pred_keypoints`` (M, K, 3): x, y and the face's score.
        """
        scores = self.stc.scores(predictions.step2_logits, predictions.step1_logits)
        step2_anchors = self.str.step2_anchors(
            {level: boxes.tensor for level, boxes in anchors.items()}, predictions.step1_deltas
        )
        per_level = [
            decode_level(
                self.box2box_transform,
                self.landmark_coder,
                step2_anchors[level],
                scores[level],
                predictions.step2_deltas[level],
                self.level_score_thresh(
                    scores[level].shape[0] // self.anchor_generator.num_cell_anchors[index]
                ),
                self.test_topk_candidates,
                image_size,
                None if predictions.step2_landmarks is None else predictions.step2_landmarks[level],
            )
            for index, level in enumerate(self.plan.levels)
        ]
        pred = Instances.cat(per_level)
        boxes = pred.pred_boxes.tensor
        if self.nms_area_plus_one:
            # IoU with (x2 - x1 + 1) areas equals plain IoU of boxes grown by one pixel.
            boxes = boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])
        keep = batched_nms(boxes, pred.scores, pred.pred_classes, self.test_nms_thresh)
        return pred[keep[: self.max_detections_per_image]]

    def level_score_thresh(self, num_cells):
        """The level's score threshold: 0 on maps with fewer cells than test_score_thresh_min_cells.

        Scores are > 0 after a sigmoid; STC's rejected anchors are exactly 0 and stay out.
        """
        below_floor = num_cells < self.test_score_thresh_min_cells
        if isinstance(below_floor, torch.Tensor):
            # Traced for export, sizes are tensors: the choice stays in the graph for every input size.
            return torch.where(below_floor, 0.0, self.test_score_thresh)
        return 0.0 if below_floor else self.test_score_thresh
