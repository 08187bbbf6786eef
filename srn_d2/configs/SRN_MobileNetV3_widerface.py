"""The real-time SRN (MobileNetV3-Large from timm, 32-channel neck and head) on WIDER FACE:
the LazyConfig twin of SRN_MobileNetV3_widerface.yaml.

Load only configs you trust: a .py config runs when loaded.
"""

from detectron2.config import LazyCall as L

from srn_d2.modeling.timm_backbone import TimmBackbone

from .SRN_R_50_FPN_widerface import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up = L(TimmBackbone)(
    model_name="mobilenetv3_large_100", pretrained=True, freeze_at=1, norm="FrozenBN", in_channels=3
)
model.backbone.out_channels = 32
model.backbone.c6_channels = 64
model.backbone.c7_channels = 32
model.head.branch_channels = 8
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
dataloader.image_format = "RGB"
dataloader.pixel_mean = model.pixel_mean
train.init_checkpoint = ""
