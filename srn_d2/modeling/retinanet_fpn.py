"""Detectron2's RetinaNet FPN over any bottom-up network with res2..res5 outputs."""

from detectron2.modeling import Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7


def retinanet_fpn(cfg, bottom_up: Backbone) -> FPN:
    """An FPN over MODEL.FPN.IN_FEATURES of ``bottom_up``, with P6 and P7 from res5, as
    Detectron2's build_retinanet_resnet_fpn_backbone builds it over a ResNet."""
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(bottom_up.output_shape()["res5"].channels, out_channels),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
