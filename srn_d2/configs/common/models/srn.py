"""SRN R-50 as the paper trains it (configs/SRN_R_50_FPN_widerface.yaml): the model alone.

Swap a part by assignment, e.g. ``model.head = L(RetinaNetStyleHead)(...)`` or
``model.backbone.bottom_up = L(TimmBackbone)(...)``; ``${...}`` values follow the
keys they name, so ``model.plan`` changes the levels everywhere it is used.
"""

from detectron2.config import LazyCall as L
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone import BasicStem, ResNet

from srn_d2.modeling import SRN, RFEHead, SingleBoxTransform, SparseGridMatcher, SRNBackbone
from srn_d2.modeling.levels import LevelPlan

model = L(SRN)(
    backbone=L(SRNBackbone)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=True, norm="FrozenBN"),
            out_features=["res2", "res3", "res4", "res5"],
            freeze_at=2,
        ),
        in_features=["res2", "res3", "res4", "res5"],
        out_channels=256,
        c6_channels=1024,
        c7_channels=256,
        norm="",
        upsample_mode="bilinear",
        align_corners=False,
        plan="${..plan}",
        size_divisibility=0,
    ),
    head=L(RFEHead)(
        channels="${..backbone.out_channels}",
        branch_channels=64,
        norm="",
        recompute_rfe=True,
        num_anchors=2,
        num_classes="${..num_classes}",
        prior_prob=0.01,
        predictor_kernel_size=1,
        init="normal",
    ),
    anchor_generator=L(DefaultAnchorGenerator)(
        sizes=[
            [8, 11.3137],
            [16, 22.6274],
            [32, 45.2548],
            [64, 90.5097],
            [128, 181.0193],
            [256, 362.0387],
        ],
        aspect_ratios=[[1.25]],
        strides=[4, 8, 16, 32, 64, 128],
        offset=0.5,
    ),
    box2box_transform=L(SingleBoxTransform)(
        weights=[1.0, 1.0, 1.0, 1.0], scale_clamp=4.135166556742356
    ),
    step1_matcher=L(SparseGridMatcher)(
        thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True, max_pairs=524288
    ),
    step2_matcher=L(SparseGridMatcher)(
        thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=True, max_pairs=524288
    ),
    num_classes=1,
    plan=L(LevelPlan)(stc_levels=["p2", "p3", "p4"], str_levels=["p5", "p6", "p7"]),
    stc_min_face_prob=0.01,
    focal_loss_alpha=0.25,
    focal_loss_gamma=2.0,
    smooth_l1_beta=0.1,
    loss_normalizer_momentum=0.9,
    loss_normalization="per_step",
    test_score_thresh=0.05,
    test_topk_candidates=2000,
    test_nms_thresh=0.5,
    max_detections_per_image=750,
    test_score_thresh_min_cells=0,
    nms_area_plus_one=False,
    pixel_mean=[103.53, 116.28, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
)
