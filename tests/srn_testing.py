"""Small models, inputs and data locations shared by the tests."""

import os

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, build_model
from detectron2.structures import Boxes, Instances
from torch import nn

from srn_d2 import model_zoo
from srn_d2.config import get_srn_cfg
from srn_d2.engine.config_files import merge_config_file

# As SRNTrainer does on the CPU: denormal gradients slow training steps several-fold.
torch.set_flush_denormal(True)


class TinyBottomUp(Backbone):
    """Four stride-2 stages (strides 4..32): a stand-in for a user's own backbone."""

    def __init__(self, in_channels: int, widths=(8, 16, 24, 32)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 2, 1), nn.ReLU())
        stages, prev = [], widths[0]
        for width in widths:
            stages.append(
                nn.Sequential(nn.Conv2d(prev, width, 3, 2, 1), nn.GroupNorm(4, width), nn.ReLU())
            )
            prev = width
        self.stages = nn.ModuleList(stages)
        self._out_features = [f"s{i}" for i in range(2, 6)]
        self._out_feature_channels = dict(zip(self._out_features, widths))
        self._out_feature_strides = {f"s{i}": 2**i for i in range(2, 6)}

    def forward(self, x):
        x = self.stem(x)
        out = {}
        for name, stage in zip(self._out_features, self.stages):
            x = stage(x)
            out[name] = x
        return out


if "build_tiny_test_bottom_up" not in BACKBONE_REGISTRY:

    @BACKBONE_REGISTRY.register()
    def build_tiny_test_bottom_up(cfg, input_shape: ShapeSpec):
        return TinyBottomUp(input_shape.channels)


def srn_cfg(name="Base-SRN.yaml"):
    """A shipped config (srn_d2.model_zoo), on the CPU, without weights (nor timm's downloads)."""
    cfg = get_srn_cfg()
    merge_config_file(cfg, model_zoo.get_config_file(name))
    cfg.MODEL.TIMM.PRETRAINED = False
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return cfg


def tiny_srn_cfg():
    """SRN on the tiny bottom-up with a narrow neck and head: fast on a CPU."""
    cfg = srn_cfg()
    cfg.MODEL.SRN.BOTTOM_UP = "build_tiny_test_bottom_up"
    cfg.MODEL.SRN.IN_FEATURES = ["s2", "s3", "s4", "s5"]
    cfg.MODEL.SRN.OUT_CHANNELS = 32
    cfg.MODEL.SRN.C6_CHANNELS = 32
    cfg.MODEL.SRN.C7_CHANNELS = 32
    cfg.MODEL.SRN.RFE_BRANCH_CHANNELS = 8
    cfg.MODEL.SRN.LOSS_NORMALIZER_MOMENTUM = 0.0
    return cfg


def build_tiny_srn(cfg=None, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg if cfg is not None else tiny_srn_cfg())


def face_instances(image_size, boxes):
    inst = Instances(image_size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.zeros(len(inst.gt_boxes), dtype=torch.long)
    return inst


def random_image(height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), generator=generator).float()


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Config overrides that make a study's run (srn_d2.tools.ablation, ladder) tiny: two steps of two
# 128 px crops; a high score threshold keeps the untrained models' inference short.
TINY_STUDY = [
    "SOLVER.MAX_ITER",
    "2",
    "SOLVER.WARMUP_ITERS",
    "1",
    "SOLVER.STEPS",
    "()",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "INPUT.SQUARE_SIZE_TRAIN",
    "128",
    # mini_faces_val's ~300 px images tested at 128-160 px: the forward passes cost a fifth.
    "INPUT.MIN_SIZE_TEST",
    "128",
    "INPUT.MAX_SIZE_TEST",
    "160",
    "MODEL.SRN.SCORE_THRESH_TEST",
    "0.3",
    "MODEL.RETINANET.SCORE_THRESH_TEST",
    "0.3",
]


def widerface_val_gt_dir():
    """Folder of the official WIDER FACE val .mat files, or None.

    Looked up in $SRN_WIDERFACE_GT_DIR, then shared/widerface_val_gt inside or
    beside the checkout (where CI puts it), then the datasets layout.
    """
    candidates = [
        os.environ.get("SRN_WIDERFACE_GT_DIR", ""),
        os.path.join(REPO_ROOT, "shared", "widerface_val_gt"),
        os.path.join(os.path.dirname(REPO_ROOT), "shared", "widerface_val_gt"),
        os.path.join(REPO_ROOT, "datasets", "widerface", "eval_tools", "ground_truth"),
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(os.path.join(candidate, "wider_face_val.mat")):
            return candidate
    return None


def converted_released_weights(folder, seed=0):
    """A checkpoint of the authors' released layout with varied random weights, converted
    by srn_d2.tools.convert_released; returns (the released network, the converted file)."""
    import released_srn
    from srn_d2.released_checkpoint import DEFAULT_CONFIG, build_target_model, convert

    net = released_srn.randomize(released_srn.ReleasedSRN(), seed=seed)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"epoch": 130, "state_dict": state}, os.path.join(folder, "srn_released.pth"))
    converted = os.path.join(folder, "srn_d2.pth")
    convert(os.path.join(folder, "srn_released.pth"), converted, build_target_model(DEFAULT_CONFIG))
    return net, converted


def train_tiny_srn(folder, datasets_root, steps=150, seed=0):
    """The tiny SRN trained ``steps`` steps of 4 crops of 128 px on mini_faces_train (under
    ``datasets_root``), saved in ``folder``; returns its config (MODEL.WEIGHTS set). Not a good
    detector, but one with a trained network's activations and confident detections: what the
    int8 and batched exports are compared on."""
    import random
    from unittest import mock

    import numpy as np
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetCatalog
    from detectron2.utils.events import EventStorage

    from srn_d2.data.dataset_mapper import SRNDatasetMapper

    with mock.patch.dict(os.environ, {"SRN_DATASETS": str(datasets_root)}):
        cfg = tiny_srn_cfg()
        cfg.INPUT.SQUARE_SIZE_TRAIN = 128
        random.seed(seed)
        np.random.seed(seed)
        model = build_tiny_srn(cfg, seed=seed).train()
        mapper = SRNDatasetMapper(cfg, is_train=True)
        records = DatasetCatalog.get("mini_faces_train")
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
        with EventStorage(0):
            for step in range(steps):
                losses = model([mapper(records[(4 * step + i) % len(records)]) for i in range(4)])
                optimizer.zero_grad()
                sum(losses.values()).backward()
                optimizer.step()
    DetectionCheckpointer(model.eval(), save_dir=str(folder)).save("trained_tiny")
    cfg.MODEL.WEIGHTS = os.path.join(str(folder), "trained_tiny.pth")
    return cfg


def spread_landmark_srn(folder, **overrides):
    """A tiny landmark SRN whose every anchor is a candidate and whose predictors are far from
    their initialization, so that scores are distinct (no ties for NMS to break) and boxes and
    points spread over the image; its cfg and weights."""
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.LANDMARKS.ENABLED = True
    cfg.MODEL.SRN.SCORE_THRESH_TEST = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 60
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    model = build_tiny_srn(cfg).eval()
    generator = torch.Generator().manual_seed(3)
    shared = model.head.shared
    for conv in (
        shared.cls_score,
        shared.bbox_pred,
        *([shared.landmark_pred] if model.num_landmarks else []),
    ):
        conv.weight.data = 0.05 * torch.randn(conv.weight.shape, generator=generator)
        conv.bias.data = 0.2 * torch.randn(conv.bias.shape, generator=generator)
    weights = os.path.join(folder, "tiny_landmarks.pth")
    torch.save({"model": model.state_dict()}, weights)
    cfg.MODEL.WEIGHTS = weights
    return cfg, model


def onnx_demo_detections(model_path, bgr, folder):
    """What ``demo.py --onnx`` writes in its JSON for ``bgr`` (every detection, threshold 0)."""
    import json
    import subprocess
    import sys

    import cv2

    cv2.imwrite(os.path.join(str(folder), "photo.png"), bgr)
    demo = [
        sys.executable,
        "demo.py",
        "--onnx",
        model_path,
        "--input",
        os.path.join(str(folder), "photo.png"),
        "--output",
        os.path.join(str(folder), "out"),
        "--confidence-threshold",
        "0",
    ]
    subprocess.run(demo, cwd=REPO_ROOT, check=True, capture_output=True)
    with open(os.path.join(str(folder), "out", "photo.json")) as f:
        return json.load(f)
