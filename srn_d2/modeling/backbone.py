"""SRN's dual-branch neck over any registered bottom-up backbone.

The neck exposes two feature pyramids at strides 4..128:
  * C-features ``c2``..``c7`` (first step): 1x1 reductions of the bottom-up
    outputs C2..C5 and of the extra layers C6, C7;
  * P-features ``p2``..``p7`` (second step): an FPN over C2..C5 plus P6, P7.
"""

from typing import Dict, List

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ..errors import require, require_norm
from .levels import LevelPlan
from .norm import get_norm

_EXPECTED_STRIDES = [4, 8, 16, 32]


def _conv(in_channels, out_channels, kernel_size, stride, norm):
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        bias=not norm,
        norm=get_norm(norm, out_channels),
    )
    weight_init.c2_xavier_fill(conv)
    return conv


class SRNBackbone(Backbone):
    """Bottom-up network + C6/C7 + first-step reductions + second-step FPN."""

    @configurable
    def __init__(
        self,
        *,
        bottom_up: Backbone,
        in_features: List[str],
        out_channels: int = 256,
        c6_channels: int = 1024,
        c7_channels: int = 256,
        norm: str = "",
        upsample_mode: str = "bilinear",
        align_corners: bool = False,
        plan: LevelPlan = LevelPlan(),
        size_divisibility: int = 0,
    ):
        """
        Args:
            bottom_up: a backbone whose outputs include ``in_features``.
            in_features: names of the bottom-up outputs used as C2..C5, which
                must have strides 4, 8, 16 and 32.
            out_channels: channels of every C- and P-feature.
            c6_channels, c7_channels: channels of the extra layers C6 and C7.
            norm: normalization of the neck's convs (see :func:`get_norm`).
            upsample_mode: interpolation of the FPN's top-down path.
            align_corners: ``align_corners`` of bilinear upsampling.
            plan: the levels; C-features are built for its step-1 levels only.
            size_divisibility: inputs are padded to a multiple of this (0: no
                padding beyond the largest image of the batch).
        """
        super().__init__()
        shapes = bottom_up.output_shape()
        missing = [f for f in in_features if f not in shapes]
        require(
            not missing,
            "MODEL.SRN.IN_FEATURES",
            list(in_features),
            f"names {missing}, which the bottom-up backbone {type(bottom_up).__name__} does not output "
            f"(it has {sorted(shapes)})",
        )
        strides = [shapes[f].stride for f in in_features]
        require(
            strides == _EXPECTED_STRIDES,
            "MODEL.SRN.IN_FEATURES",
            list(in_features),
            f"have strides {strides}; SRN needs {_EXPECTED_STRIDES}",
        )
        require(
            upsample_mode in ("bilinear", "nearest"),
            "MODEL.SRN.FUSE_UPSAMPLE",
            upsample_mode,
            'must be "bilinear" or "nearest"',
        )
        require(
            size_divisibility >= 0, "MODEL.SRN.SIZE_DIVISIBILITY", size_divisibility, "must be >= 0"
        )
        self.bottom_up = bottom_up
        self._size_divisibility = size_divisibility
        self.in_features = list(in_features)
        self.upsample_mode = upsample_mode
        self.align_corners = align_corners
        in_channels = [shapes[f].channels for f in in_features]

        self.plan = plan
        # C6 and C7 exist only for the levels that use them; plain convs with no
        # activation in between, as in the released model.
        self.step1_features = [plan.step1_feature(level) for level in plan.step1_levels]
        if {"c6", "c7"} & set(self.step1_features):
            self.c6 = _conv(in_channels[-1], c6_channels, 3, 2, norm)
        if "c7" in self.step1_features:
            self.c7 = _conv(c6_channels, c7_channels, 3, 2, norm)
        c_channels = dict(
            zip(["c2", "c3", "c4", "c5", "c6", "c7"], in_channels + [c6_channels, c7_channels])
        )
        for name in self.step1_features:
            self.add_module(f"{name}_conv", _conv(c_channels[name], out_channels, 1, 1, norm))
        for level, channels in zip(range(2, 6), in_channels):
            self.add_module(f"c{level}_lateral", _conv(channels, out_channels, 1, 1, norm))
            self.add_module(f"p{level}_conv", _conv(out_channels, out_channels, 3, 1, norm))
        self.p6_conv = _conv(out_channels, out_channels, 3, 2, norm)
        self.p7_conv = _conv(out_channels, out_channels, 3, 2, norm)

        self._out_features = plan.head_in_features
        self._out_feature_strides = {
            name: LevelPlan.stride("p" + name[1:]) for name in self._out_features
        }
        self._out_feature_channels = {name: out_channels for name in self._out_features}

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        name = cfg.MODEL.SRN.BOTTOM_UP
        require(
            name in BACKBONE_REGISTRY,
            "MODEL.SRN.BOTTOM_UP",
            name,
            "is not in BACKBONE_REGISTRY; register the bottom-up builder before building the model",
        )
        return {
            "bottom_up": BACKBONE_REGISTRY.get(name)(cfg, input_shape),
            "in_features": cfg.MODEL.SRN.IN_FEATURES,
            "out_channels": cfg.MODEL.SRN.OUT_CHANNELS,
            "c6_channels": cfg.MODEL.SRN.C6_CHANNELS,
            "c7_channels": cfg.MODEL.SRN.C7_CHANNELS,
            "norm": require_norm(cfg.MODEL.SRN.NECK_NORM, "MODEL.SRN.NECK_NORM"),
            "upsample_mode": cfg.MODEL.SRN.FUSE_UPSAMPLE,
            "align_corners": cfg.MODEL.SRN.FUSE_ALIGN_CORNERS,
            "size_divisibility": cfg.MODEL.SRN.SIZE_DIVISIBILITY,
            "plan": LevelPlan.from_config(cfg),
        }

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x: (N, C, H, W) normalized images.

        Returns:
            the C-features of the plan's step-1 levels ("c2".."c7") and every
            P-feature ("p2".."p7"), each (N, out_channels, ceil(H / stride), ceil(W / stride)).
        """
        bottom_up = self.bottom_up(x)
        c = dict(zip(["c2", "c3", "c4", "c5"], (bottom_up[f] for f in self.in_features)))
        if hasattr(self, "c6"):
            c["c6"] = self.c6(c["c5"])
        if hasattr(self, "c7"):
            c["c7"] = self.c7(c["c6"])
        out = {name: getattr(self, f"{name}_conv")(c[name]) for name in self.step1_features}

        lateral5 = self.c5_lateral(c["c5"])
        top_down = lateral5
        p = {5: self.p5_conv(lateral5)}
        for level in (4, 3, 2):
            lateral = getattr(self, f"c{level}_lateral")(c[f"c{level}"])
            upsampled = F.interpolate(
                top_down,
                size=lateral.shape[-2:],
                mode=self.upsample_mode,
                **(
                    {"align_corners": self.align_corners}
                    if self.upsample_mode == "bilinear"
                    else {}
                ),
            )
            top_down = lateral + upsampled
            p[level] = getattr(self, f"p{level}_conv")(top_down)
        p[6] = self.p6_conv(lateral5)
        p[7] = self.p7_conv(p[6])
        out.update({f"p{level}": p[level] for level in range(2, 8)})
        return out

    def output_shape(self):
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_srn_backbone(cfg, input_shape: ShapeSpec) -> SRNBackbone:
    """SRN backbone over the bottom-up builder named by MODEL.SRN.BOTTOM_UP."""
    return SRNBackbone(cfg, input_shape)
