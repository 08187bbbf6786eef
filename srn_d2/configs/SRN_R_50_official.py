"""The authors' released SRN R-50 (converted weights): the LazyConfig twin of SRN_R_50_official.yaml.

Load only configs you trust: a .py config runs when loaded.
"""

from detectron2.config import LazyCall as L

from srn_d2.modeling.anchor_generator import SRNLegacyAnchorGenerator

from .SRN_R_50_FPN_widerface import dataloader, lr_multiplier, model, optimizer, train

model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.backbone.bottom_up.stages.stride_in_1x1 = False
model.backbone.align_corners = True
model.anchor_generator = L(SRNLegacyAnchorGenerator)(
    scales=[2.0, 2.828427], aspect_ratio=1.25, strides=[4, 8, 16, 32, 64, 128]
)
model.box2box_transform.scale_clamp = float("inf")
model.test_topk_candidates = 6000
model.test_nms_thresh = 0.4
model.test_score_thresh_min_cells = 120
model.nms_area_plus_one = True

dataloader.image_format = "RGB"
dataloader.pixel_mean = model.pixel_mean
dataloader.evaluator.submission_format = "released"
train.init_checkpoint = ""
train.tta.inclusive_pixel_boxes = True
