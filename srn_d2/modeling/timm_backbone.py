"""Any timm model as a Detectron2 backbone: SRN's bottom-up network, or RetinaNet's under an FPN.

    MODEL:
      SRN:
        BOTTOM_UP: "build_timm_backbone"
      TIMM:
        NAME: "mobilenetv3_large_100"
        PRETRAINED: True

The model is built by ``timm.create_model(name, features_only=True)``; its
outputs at strides 4, 8, 16 and 32, found from its own ``feature_info``, become
``res2``..``res5``: the names Detectron2's ResNets give those strides, so that
``MODEL.SRN.IN_FEATURES`` and ``MODEL.FPN.IN_FEATURES`` written for ResNets work
unchanged.
"""

from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from ..errors import require
from .norm import GroupNorm, group_norm_groups
from .retinanet_fpn import retinanet_fpn

STRIDES = (4, 8, 16, 32)
NORMS = ("FrozenBN", "BN", "GN")


class TimmBackbone(Backbone):
    """A timm model's features at strides 4..32, as ``res2``..``res5``."""

    @configurable
    def __init__(
        self,
        *,
        model_name: str,
        pretrained: bool = False,
        freeze_at: int = 0,
        norm: str = "FrozenBN",
        in_channels: int = 3,
    ):
        """
        Args:
            model_name: a timm model name (``timm.list_models()``).
            pretrained: load timm's ImageNet weights (downloaded by timm).
            freeze_at: as Detectron2's MODEL.RESNETS.FREEZE_AT: 0 trains every
                layer, 1 freezes the stem (everything before the stride-4 stage),
                k > 1 also the stages up to stride 2 ** k.
            norm: the BatchNorm layers become "FrozenBN" (fixed statistics and
                affine, to fine-tune pretrained weights at small batches), stay
                "BN", or become "GN" (GroupNorm of up to 32 groups, to train
                from scratch at small batches).
        """
        super().__init__()
        import timm

        require(norm in NORMS, "MODEL.TIMM.NORM", norm, f"must be one of {NORMS}")
        require(
            not (freeze_at and norm == "BN"),
            "MODEL.TIMM.NORM",
            norm,
            "with MODEL.TIMM.FREEZE_AT > 0 the frozen stages' BatchNorm statistics would still "
            "change in training; use FrozenBN (or GN)",
        )
        self.body = timm.create_model(
            model_name, pretrained=pretrained, features_only=True, in_chans=in_channels
        )
        reductions = list(self.body.feature_info.reduction())
        missing = [s for s in STRIDES if s not in reductions]
        require(
            not missing,
            "MODEL.TIMM.NAME",
            model_name,
            f"has features at strides {reductions}; SRN and the FPN need strides {list(STRIDES)} "
            f"(missing {missing})",
        )
        self.indices = [reductions.index(s) for s in STRIDES]
        channels = self.body.feature_info.channels()
        self._out_features = [f"res{i}" for i in range(2, 6)]
        self._out_feature_strides = dict(zip(self._out_features, STRIDES))
        self._out_feature_channels = {
            name: channels[i] for name, i in zip(self._out_features, self.indices)
        }
        if norm == "GN":
            _batch_norm_to_group_norm(self.body)
        self._freeze(freeze_at)
        if norm == "FrozenBN":
            from timm.layers import freeze_batch_norm_2d

            self.body = freeze_batch_norm_2d(self.body)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        timm_cfg = cfg.MODEL.TIMM
        require(
            0 <= timm_cfg.FREEZE_AT <= 5,
            "MODEL.TIMM.FREEZE_AT",
            timm_cfg.FREEZE_AT,
            "must lie in 0..5",
        )
        return {
            "model_name": timm_cfg.NAME,
            # timm's ImageNet weights only start training; a checkpoint in MODEL.WEIGHTS replaces them,
            # so exporting or evaluating a trained model downloads nothing.
            "pretrained": timm_cfg.PRETRAINED and not cfg.MODEL.WEIGHTS,
            "freeze_at": timm_cfg.FREEZE_AT,
            "norm": timm_cfg.NORM,
            "in_channels": input_shape.channels,
        }

    def _freeze(self, freeze_at: int) -> None:
        """Stop training the stem (freeze_at 1) or the stem and the stages up to stride 2 ** freeze_at.

        timm names the module that outputs each feature: the stem is every
        parameter before the stride-4 output's module, and stage k ends with
        the stride-2 ** k output's module.
        """
        if freeze_at == 0:
            return
        names = [name for name, _ in self.body.named_parameters()]
        module = self.body.feature_info.module_name()[self.indices[max(freeze_at - 2, 0)]]
        # timm's FeatureListNet flattens nested module names ("stages.0" -> "stages_0").
        prefixes = (module + ".", module.replace(".", "_") + ".")
        inside = [i for i, name in enumerate(names) if name.startswith(prefixes)]
        boundary = inside[0] if freeze_at == 1 else inside[-1] + 1
        for index, parameter in enumerate(self.body.parameters()):
            parameter.requires_grad_(index >= boundary)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, C, H, W) images -> ``res2``..``res5``, (N, C_i, ceil(H / s), ceil(W / s)) at strides s = 4..32."""
        features = self.body(x)
        return {name: features[i] for name, i in zip(self._out_features, self.indices)}


def _batch_norm_to_group_norm(module: nn.Module) -> None:
    """Replace, in place, every BatchNorm (timm's BatchNorm-plus-activation too) by a
    GroupNorm of :func:`group_norm_groups` groups, keeping the activation that followed it."""
    from timm.layers import BatchNormAct2d, GroupNormAct

    for name, child in module.named_children():
        if isinstance(child, BatchNormAct2d):
            replacement = GroupNormAct(
                child.num_features,
                num_groups=group_norm_groups(child.num_features),
                eps=child.eps,
                apply_act=False,
            )
            replacement.act, replacement.drop = child.act, child.drop
            setattr(module, name, replacement)
        elif isinstance(child, nn.BatchNorm2d):
            setattr(
                module,
                name,
                GroupNorm(group_norm_groups(child.num_features), child.num_features, eps=child.eps),
            )
        else:
            _batch_norm_to_group_norm(child)


@BACKBONE_REGISTRY.register()
def build_timm_backbone(cfg, input_shape: ShapeSpec) -> TimmBackbone:
    """The timm model of MODEL.TIMM.NAME; outputs res2..res5 (strides 4..32)."""
    return TimmBackbone(cfg, input_shape)


@BACKBONE_REGISTRY.register()
def build_timm_fpn_backbone(cfg, input_shape: ShapeSpec):
    """RetinaNet's FPN (P3..P7 or P2..P7 from MODEL.FPN.IN_FEATURES, P6, P7 from res5) over a timm model."""
    return retinanet_fpn(cfg, build_timm_backbone(cfg, input_shape))
