"""SRN's shared classification / regression heads and their registry.

One head serves all six levels and both steps. It exposes the two towers
separately (``classify`` and ``regress``) so that the first step computes
only the tower each level needs.
"""

import math
from typing import List, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry
from fvcore.nn import weight_init
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import require, require_norm
from ..data.retinaface_labels import NUM_LANDMARKS
from .norm import get_norm
from .rfe import RFE

HEAD_INITS = ("normal", "xavier")

SRN_HEAD_REGISTRY = Registry("SRN_HEAD")
SRN_HEAD_REGISTRY.__doc__ = """
Registry for SRN's shared heads. A head is built as ``head(cfg, input_shape)``
with the ShapeSpec of one feature level, and implements
``classify(features) -> logits`` and ``regress(features) -> deltas`` on lists
of per-level feature maps, returning (N, A*K, H, W) / (N, A*4, H, W) maps; with
landmarks, ``num_landmarks`` > 0 and ``regress_with_landmarks(features) ->
(deltas, landmark deltas)``, the latter (N, A*2*num_landmarks, H, W).
"""


def _conv3x3_relu(channels: int, norm: str) -> List[nn.Module]:
    layers = [nn.Conv2d(channels, channels, 3, padding=1)]
    if norm:
        layers.append(get_norm(norm, channels))
    layers.append(nn.ReLU(inplace=True))
    return layers


class SharedTowerHead(nn.Module):
    """Two towers (classification, box) with their predictors, shared by every level."""

    def __init__(
        self,
        cls_subnet: nn.Module,
        bbox_subnet: nn.Module,
        *,
        channels: int,
        num_anchors: int,
        num_classes: int,
        prior_prob: float,
        predictor_kernel_size: int,
        recompute_towers: bool = False,
        init: str = "normal",
        num_landmarks: int = 0,
    ):
        """
        Args:
            cls_subnet, bbox_subnet: the towers.
            channels: their input and output channels.
            num_anchors, num_classes: predictor outputs per position are
                num_anchors * num_classes logits and num_anchors * 4 deltas.
            prior_prob: initial face probability of every anchor.
            predictor_kernel_size: kernel of the two predictor convs.
            recompute_towers: in training, keep only each tower's input for
                backward and recompute the tower there (MODEL.SRN.HEAD_ACTIVATION_CHECKPOINT "towers").
            init: the convs' initial weights: "normal" N(0, 0.01) or "xavier" (MODEL.SRN.HEAD_INIT).
            num_landmarks: points per face predicted from the box tower, 2 offsets each
                per anchor (0: none; MODEL.SRN.LANDMARKS.ENABLED gives 5).
        """
        require(
            init in HEAD_INITS,
            "MODEL.SRN.HEAD_INIT",
            init,
            f"(argument init) must be one of {HEAD_INITS}",
        )
        require(
            0.0 < prior_prob < 1.0,
            "MODEL.SRN.PRIOR_PROB",
            prior_prob,
            "(argument prior_prob) must lie in (0, 1)",
        )
        super().__init__()
        self.num_classes = num_classes
        self.recompute_towers = recompute_towers
        self.cls_subnet = cls_subnet
        self.bbox_subnet = bbox_subnet
        pad = predictor_kernel_size // 2
        self.cls_score = nn.Conv2d(
            channels, num_anchors * num_classes, predictor_kernel_size, padding=pad
        )
        self.bbox_pred = nn.Conv2d(channels, num_anchors * 4, predictor_kernel_size, padding=pad)
        self.num_landmarks = num_landmarks
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                self._init_conv(module, init)
        # Start every anchor at face probability prior_prob so the focal loss
        # is not swamped by the easy negatives in the first iterations.
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))
        if num_landmarks:
            # Made after the others are initialized, so that they start as in a model without landmarks.
            self.landmark_pred = nn.Conv2d(
                channels, num_anchors * 2 * num_landmarks, predictor_kernel_size, padding=pad
            )
            self._init_conv(self.landmark_pred, init)

    @staticmethod
    def _init_conv(conv: nn.Conv2d, init: str) -> None:
        if init == "xavier":
            weight_init.c2_xavier_fill(conv)
        else:
            nn.init.normal_(conv.weight, mean=0, std=0.01)
            nn.init.constant_(conv.bias, 0)

    def classify(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        return [self.cls_score(self._tower(self.cls_subnet, x)) for x in features]

    def regress(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        return [self.bbox_pred(self._tower(self.bbox_subnet, x)) for x in features]

    def regress_with_landmarks(
        self, features: List[torch.Tensor]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Box and landmark deltas from one run of the box tower per map: the landmarks cost one predictor conv.
        Each map's tower output is freed before the next map's is made, as in :meth:`regress`."""
        deltas, landmarks = [], []
        for x in features:
            tower = self._tower(self.bbox_subnet, x)
            deltas.append(self.bbox_pred(tower))
            landmarks.append(self.landmark_pred(tower))
        return deltas, landmarks

    def _tower(self, tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.recompute_towers and torch.is_grad_enabled():
            return checkpoint(tower, x, use_reentrant=False)
        return tower(x)

    def forward(self, features: List[torch.Tensor]):
        return self.classify(features), self.regress(features)

    @staticmethod
    def common_args(cfg, input_shape: ShapeSpec, num_anchors: int) -> dict:
        srn = cfg.MODEL.SRN
        require(
            srn.NUM_CLASSES >= 1,
            "MODEL.SRN.NUM_CLASSES",
            srn.NUM_CLASSES,
            "needs at least one class",
        )
        require(
            0 < srn.PRIOR_PROB < 1, "MODEL.SRN.PRIOR_PROB", srn.PRIOR_PROB, "must lie in (0, 1)"
        )
        require(
            srn.HEAD_ACTIVATION_CHECKPOINT in ("", "rfe", "towers"),
            "MODEL.SRN.HEAD_ACTIVATION_CHECKPOINT",
            srn.HEAD_ACTIVATION_CHECKPOINT,
            'must be "", "rfe" or "towers"',
        )
        return {
            "recompute_towers": srn.HEAD_ACTIVATION_CHECKPOINT == "towers",
            "init": srn.HEAD_INIT,
            "channels": input_shape.channels,
            "num_anchors": num_anchors,
            "num_classes": cfg.MODEL.SRN.NUM_CLASSES,
            "prior_prob": cfg.MODEL.SRN.PRIOR_PROB,
            "predictor_kernel_size": cfg.MODEL.SRN.PREDICTOR_KERNEL_SIZE,
            "num_landmarks": NUM_LANDMARKS if srn.LANDMARKS.ENABLED else 0,
        }


@SRN_HEAD_REGISTRY.register()
class RFEHead(SharedTowerHead):
    """The paper's head: conv3x3+ReLU -> RFE -> conv3x3+ReLU in each tower."""

    @configurable
    def __init__(self, *, channels, branch_channels=64, norm="", recompute_rfe=False, **kwargs):
        require(
            isinstance(branch_channels, int) and branch_channels >= 1,
            "MODEL.SRN.RFE_BRANCH_CHANNELS",
            branch_channels,
            "(argument branch_channels) must be a positive number of channels",
        )

        def tower():
            return nn.Sequential(
                *_conv3x3_relu(channels, norm),
                RFE(channels, branch_channels, recompute=recompute_rfe),
                *_conv3x3_relu(channels, norm),
            )

        super().__init__(tower(), tower(), channels=channels, **kwargs)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec, num_anchors: int):
        return {
            **cls.common_args(cfg, input_shape, num_anchors),
            "branch_channels": cfg.MODEL.SRN.RFE_BRANCH_CHANNELS,
            "norm": require_norm(cfg.MODEL.SRN.HEAD_NORM, "MODEL.SRN.HEAD_NORM"),
            "recompute_rfe": cfg.MODEL.SRN.HEAD_ACTIVATION_CHECKPOINT == "rfe",
        }


@SRN_HEAD_REGISTRY.register()
class RetinaNetStyleHead(SharedTowerHead):
    """RetinaNet's towers (``num_convs`` conv3x3+ReLU each): the RFE ablation."""

    @configurable
    def __init__(self, *, channels, num_convs=4, norm="", **kwargs):
        def tower():
            return nn.Sequential(
                *[m for _ in range(num_convs) for m in _conv3x3_relu(channels, norm)]
            )

        super().__init__(tower(), tower(), channels=channels, **kwargs)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec, num_anchors: int):
        return {
            **cls.common_args(cfg, input_shape, num_anchors),
            "num_convs": cfg.MODEL.SRN.NUM_CONVS,
            "norm": require_norm(cfg.MODEL.SRN.HEAD_NORM, "MODEL.SRN.HEAD_NORM"),
        }


def build_srn_head(cfg, input_shape: ShapeSpec, num_anchors: int) -> SharedTowerHead:
    """Build the head named by MODEL.SRN.HEAD_NAME."""
    return SRN_HEAD_REGISTRY.get(cfg.MODEL.SRN.HEAD_NAME)(cfg, input_shape, num_anchors)
