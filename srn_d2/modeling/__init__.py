"""SRN's Detectron2 components; importing this module registers them."""

from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
from .anchor_generator import SRNLegacyAnchorGenerator
from .backbone import SRNBackbone, build_srn_backbone
from .box_regression import SingleBoxTransform
from .heads import SRN_HEAD_REGISTRY, RFEHead, RetinaNetStyleHead, build_srn_head
from .levels import SRN_LEVELS, LevelPlan
from .matcher import AnchorLevel, SparseGridMatcher
from .mini_resnet import build_mini_resnet_backbone, build_mini_resnet_fpn_backbone
from .rfe import RFE
from .srn import SRN
from .test_time_augmentation import SRNWithTTA, bbox_vote, srn_tta_passes
from .timm_backbone import TimmBackbone, build_timm_backbone, build_timm_fpn_backbone
from .two_step_head import SelectiveTwoStepHead, TwoStepPredictions

__all__ = [
    "SRN",
    "SRN_LEVELS",
    "LevelPlan",
    "SRNBackbone",
    "SingleBoxTransform",
    "build_srn_backbone",
    "SRN_HEAD_REGISTRY",
    "RFEHead",
    "RetinaNetStyleHead",
    "build_srn_head",
    "RFE",
    "AnchorLevel",
    "SparseGridMatcher",
    "SelectiveTwoStepHead",
    "TwoStepPredictions",
    "SRNLegacyAnchorGenerator",
    "SRNWithTTA",
    "bbox_vote",
    "srn_tta_passes",
    "build_mini_resnet_backbone",
    "build_mini_resnet_fpn_backbone",
    "TimmBackbone",
    "build_timm_backbone",
    "build_timm_fpn_backbone",
]
