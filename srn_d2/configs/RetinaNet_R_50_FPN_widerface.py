"""Detectron2's RetinaNet on SRN's data, anchors and schedule: the LazyConfig twin of
RetinaNet_R_50_FPN_widerface.yaml (the baseline users benchmark SRN against).

Load only configs you trust: a .py config runs when loaded.
"""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch.retinanet import RetinaNet, RetinaNetHead

from .SRN_R_50_FPN_widerface import dataloader, lr_multiplier, optimizer, train
from .common.models.srn import model as srn

model = L(RetinaNet)(
    backbone=L(FPN)(
        bottom_up=srn.backbone.bottom_up,
        in_features=["res2", "res3", "res4", "res5"],
        out_channels=256,
        norm="",
        top_block=L(LastLevelP6P7)(in_channels=2048, out_channels="${..out_channels}"),
        fuse_type="sum",
    ),
    head=L(RetinaNetHead)(
        input_shape=[ShapeSpec(channels=256)] * 6,
        num_classes="${..num_classes}",
        conv_dims=[256, 256, 256, 256],
        norm="",
        prior_prob=0.01,
        num_anchors=2,
    ),
    head_in_features=["p2", "p3", "p4", "p5", "p6", "p7"],
    anchor_generator=srn.anchor_generator,
    box2box_transform=srn.box2box_transform,
    anchor_matcher=L(Matcher)(
        thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=True
    ),
    num_classes=1,
    focal_loss_alpha=0.25,
    focal_loss_gamma=2.0,
    smooth_l1_beta=0.1,
    box_reg_loss_type="smooth_l1",
    test_score_thresh=0.05,
    test_topk_candidates=2000,
    test_nms_thresh=0.5,
    max_detections_per_image=750,
    pixel_mean=srn.pixel_mean,
    pixel_std=srn.pixel_std,
    input_format="${dataloader.image_format}",
)
