"""A narrow ResNet for training from scratch on a CPU (the mini configs and ``make demo``).

Built from Detectron2's own ResNet blocks; registered both as a bottom-up
network for SRN and, under an FPN, as a backbone for Detectron2's RetinaNet,
so that the two detectors compare on the same features.
"""

from typing import Sequence

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, ResNet

from ..errors import require, require_norm
from .norm import get_norm
from .retinanet_fpn import retinanet_fpn


@BACKBONE_REGISTRY.register()
def build_mini_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """ResNet of BasicBlocks with MODEL.MINI_RESNET widths; outputs res2..res5 (strides 4..32)."""
    mini = cfg.MODEL.MINI_RESNET
    require(
        len(mini.WIDTHS) == 4,
        "MODEL.MINI_RESNET.WIDTHS",
        mini.WIDTHS,
        "needs four entries (res2..res5)",
    )
    require(
        len(mini.BLOCKS_PER_STAGE) == 4,
        "MODEL.MINI_RESNET.BLOCKS_PER_STAGE",
        mini.BLOCKS_PER_STAGE,
        "needs four entries (res2..res5)",
    )
    require_norm(mini.NORM, "MODEL.MINI_RESNET.NORM")
    return mini_resnet(
        input_shape.channels, mini.STEM_CHANNELS, mini.WIDTHS, mini.BLOCKS_PER_STAGE, mini.NORM
    )


def mini_resnet(
    in_channels: int,
    stem_channels: int,
    widths: Sequence[int],
    blocks_per_stage: Sequence[int],
    norm: str,
) -> ResNet:
    """The narrow ResNet itself (the LazyConfig configs call it): a BasicStem, then one stage
    of ``blocks_per_stage[i]`` BasicBlocks of ``widths[i]`` channels for each of res2..res5."""

    def norm_layer(channels):
        return get_norm(norm, channels)

    stem = BasicStem(in_channels, stem_channels, norm=norm_layer)
    stages, in_channels = [], stem_channels
    for index, (width, blocks) in enumerate(zip(widths, blocks_per_stage)):
        first_stride = 1 if index == 0 else 2
        stages.append(
            ResNet.make_stage(
                BasicBlock,
                blocks,
                in_channels=in_channels,
                out_channels=width,
                stride_per_block=[first_stride] + [1] * (blocks - 1),
                norm=norm_layer,
            )
        )
        in_channels = width
    return ResNet(stem, stages, out_features=["res2", "res3", "res4", "res5"])


@BACKBONE_REGISTRY.register()
def build_mini_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """RetinaNet's FPN (P6, P7 from res5) over the mini ResNet."""
    return retinanet_fpn(cfg, build_mini_resnet_backbone(cfg, input_shape))
