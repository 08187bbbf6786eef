"""Config keys added by srn_d2, in Detectron2's ``add_*_config`` convention.

Every default below is the paper's value (SRN_SPEC.md); where the authors'
released code differs, the released value is named in the comment and set
by ``configs/SRN_R_50_official.yaml``.
"""
import math

from detectron2.config import CfgNode as CN


def add_srn_config(cfg):
    """Add the keys used by SRN, the face datasets, augmentation, evaluation and TTA."""
    _add_model_config(cfg)
    _add_input_config(cfg)
    _add_test_config(cfg)


def _add_model_config(cfg):
    _C = cfg
    _C.MODEL.SRN = CN()
    # Bottom-up network under the SRN neck: any BACKBONE_REGISTRY builder whose
    # outputs include the four features of MODEL.SRN.IN_FEATURES (strides 4..32).
    _C.MODEL.SRN.BOTTOM_UP = "build_resnet_backbone"
    _C.MODEL.SRN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    # Channels of every C-feature (first step) and P-feature (second step).
    _C.MODEL.SRN.OUT_CHANNELS = 256
    # C6 = 3x3/2 conv on C5 to this many channels; C7 = 3x3/2 conv on C6.
    _C.MODEL.SRN.C6_CHANNELS = 1024
    _C.MODEL.SRN.C7_CHANNELS = 256
    # Top-down upsampling of the second-step FPN: "bilinear" (released code) or "nearest".
    _C.MODEL.SRN.FUSE_UPSAMPLE = "bilinear"
    # align_corners of the bilinear top-down upsampling (released model: True).
    _C.MODEL.SRN.FUSE_ALIGN_CORNERS = False
    # Normalization of the neck's convs ("" = none, "GN", "BN", ...; see detectron2.layers.get_norm).
    _C.MODEL.SRN.NECK_NORM = ""
    # Pad each batch to a multiple of this many pixels (0 = to the largest image only).
    # The top-down path resizes to each lateral's exact size, so SRN runs on any
    # height and width; padding only adds border pixels, which change the features
    # near the right and bottom edges (the released model runs unpadded).
    _C.MODEL.SRN.SIZE_DIVISIBILITY = 0

    # Shared head, from srn_d2's SRN_HEAD_REGISTRY: "RFEHead" (paper) or
    # "RetinaNetStyleHead" (four 3x3 convs per tower, the RFE ablation).
    _C.MODEL.SRN.HEAD_NAME = "RFEHead"
    _C.MODEL.SRN.HEAD_NORM = ""
    # Number of 3x3 conv layers per tower in RetinaNetStyleHead.
    _C.MODEL.SRN.NUM_CONVS = 4
    # RFE: channels of each of its four branches.
    _C.MODEL.SRN.RFE_BRANCH_CHANNELS = 64
    # Kernel of the final logit / delta convs (released model: 1; RetinaNet: 3).
    _C.MODEL.SRN.PREDICTOR_KERNEL_SIZE = 1
    _C.MODEL.SRN.NUM_CLASSES = 1
    _C.MODEL.SRN.PRIOR_PROB = 0.01

    # Levels with Selective Two-step Classification and Regression.
    _C.MODEL.SRN.STC_LEVELS = ["p2", "p3", "p4"]
    _C.MODEL.SRN.STR_LEVELS = ["p5", "p6", "p7"]
    # Anchors whose step-1 negative confidence (1 - p_face) exceeds this are
    # dropped from step 2, in training and inference.
    _C.MODEL.SRN.STC_NEG_THRESH = 0.99

    # Anchor matching: [negative below, positive from] IoU for each step.
    _C.MODEL.SRN.STEP1_IOU_THRESHOLDS = [0.3, 0.7]
    _C.MODEL.SRN.STEP2_IOU_THRESHOLDS = [0.4, 0.5]
    _C.MODEL.SRN.IOU_LABELS = [0, -1, 1]
    # Make each face's best anchor positive even below the positive IoU: only
    # ~26% of WIDER faces reach IoU 0.7 with an SRN anchor (SRN_SPEC.md).
    _C.MODEL.SRN.ALLOW_LOW_QUALITY_MATCHES = True
    # Upper bound on the faces x anchors IoU block held at once while matching.
    _C.MODEL.SRN.MATCHER_MAX_ELEMENTS = 1 << 24

    _C.MODEL.SRN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
    # Largest log-scale change of a box's width / height when decoding deltas
    # (Detectron2's default, log(1000 / 16)); the released model clamps nothing (.inf).
    _C.MODEL.SRN.BBOX_REG_SCALE_CLAMP = math.log(1000.0 / 16)
    _C.MODEL.SRN.FOCAL_LOSS_ALPHA = 0.25
    _C.MODEL.SRN.FOCAL_LOSS_GAMMA = 2.0
    _C.MODEL.SRN.SMOOTH_L1_LOSS_BETA = 0.1
    # Momentum of the running positive-anchor counts that normalize the losses
    # (Detectron2's RetinaNet uses 0.9); 0.0 = this batch's counts alone.
    _C.MODEL.SRN.LOSS_NORMALIZER_MOMENTUM = 0.9

    # Inference (paper: top 2000, NMS 0.5, 750 kept via TEST.DETECTIONS_PER_IMAGE;
    # released code: top 6000 per level, NMS 0.4).
    _C.MODEL.SRN.SCORE_THRESH_TEST = 0.05
    _C.MODEL.SRN.TOPK_CANDIDATES_TEST = 2000
    _C.MODEL.SRN.NMS_THRESH_TEST = 0.5
    # Levels whose maps have fewer cells than this keep every anchor regardless
    # of SCORE_THRESH_TEST (released code: 120); 0 disables.
    _C.MODEL.SRN.NO_SCORE_FLOOR_BELOW_CELLS = 0
    # Box areas with the legacy "+1" (x2 - x1 + 1) in NMS, as the released code does.
    _C.MODEL.SRN.LEGACY_PLUS_ONE = False

    # The narrow ResNet of the CPU-scale configs ("build_mini_resnet_backbone" as
    # MODEL.SRN.BOTTOM_UP, "build_mini_resnet_fpn_backbone" for RetinaNet).
    _C.MODEL.MINI_RESNET = CN()
    _C.MODEL.MINI_RESNET.STEM_CHANNELS = 32
    _C.MODEL.MINI_RESNET.WIDTHS = [32, 64, 128, 256]
    _C.MODEL.MINI_RESNET.BLOCKS_PER_STAGE = [1, 1, 1, 1]
    _C.MODEL.MINI_RESNET.NORM = "GN"

    # Anchors of the legacy generator used by the released model
    # ("SRNLegacyAnchorGenerator"); sizes and ratios come from MODEL.ANCHOR_GENERATOR.
    _C.MODEL.ANCHOR_GENERATOR.LEGACY_SCALES = [2.0, 2.828427]


def _add_input_config(cfg):
    _C = cfg
    # The paper's training augmentation (srn_d2.data.build_srn_train_augmentation).
    _C.INPUT.SRN_AUGMENTATION = True
    _C.INPUT.PHOTOMETRIC = CN()
    _C.INPUT.PHOTOMETRIC.ENABLED = True
    _C.INPUT.PHOTOMETRIC.BRIGHTNESS_DELTA = 32
    _C.INPUT.PHOTOMETRIC.CONTRAST_RANGE = (0.5, 1.5)
    _C.INPUT.PHOTOMETRIC.SATURATION_RANGE = (0.5, 1.5)
    _C.INPUT.PHOTOMETRIC.HUE_DELTA = 18
    _C.INPUT.EXPAND = CN()
    _C.INPUT.EXPAND.ENABLED = True
    # Expansion ratio drawn from U(1, MAX_RATIO); the canvas is filled with the mean color.
    _C.INPUT.EXPAND.MAX_RATIO = 2.0
    _C.INPUT.SQUARE_CROP = CN()
    _C.INPUT.SQUARE_CROP.ENABLED = True
    # Side of the random square patch as a fraction of the shorter side: U(MIN, MAX).
    _C.INPUT.SQUARE_CROP.MIN_SCALE = 0.5
    _C.INPUT.SQUARE_CROP.MAX_SCALE = 1.0
    # Final square training size (pixels).
    _C.INPUT.SQUARE_SIZE_TRAIN = 1024


def _add_test_config(cfg):
    _C = cfg
    # The authors' multi-scale test (srn_d2.modeling.SRNWithTTA); TEST.AUG.ENABLED turns it on.
    _C.TEST.AUG.SRN = CN()
    # Pixel budget: enlarged passes keep height * width under MAX_SIZE ** 2.
    _C.TEST.AUG.SRN.MAX_SIZE = 2100
    _C.TEST.AUG.SRN.SHRINK = 0.5
    # Shrunk pass keeps boxes larger than this (pixels, in original coordinates).
    _C.TEST.AUG.SRN.SHRINK_MIN_BOX = 30.0
    _C.TEST.AUG.SRN.ENLARGE_BASE = 1.5
    # Enlarged passes keep boxes smaller than this (pixels, in original coordinates).
    _C.TEST.AUG.SRN.ENLARGE_MAX_BOX = 100.0
    _C.TEST.AUG.SRN.FLIP = True
    _C.TEST.AUG.SRN.VOTE_IOU = 0.5
    # WIDER FACE evaluation: directory of the official .mat ground truth for
    # widerface_val ("" = <datasets root>/widerface/eval_tools/ground_truth).
    _C.TEST.WIDERFACE_GT_DIR = ""
    # How submission files write boxes, and so what the evaluation scores:
    # "precise" (x y w h to 0.01 px, w = x2 - x1, scores to 1e-6) or "released"
    # (the authors' files: integers, w = x2 - x1 + 1, scores to 3 decimals).
    _C.TEST.WIDERFACE_SUBMISSION_FORMAT = "precise"



def require(ok: bool, key: str, value, requirement: str) -> None:
    """ValueError naming the config key whose value breaks ``requirement``."""
    if not ok:
        raise ValueError(f"{key} = {value!r}: {requirement}")


def check_norm(norm: str, key: str) -> str:
    """``norm`` if detectron2.layers.get_norm knows it, else ValueError naming ``key``."""
    from detectron2.layers import get_norm

    try:
        get_norm(norm, 32)
    except KeyError:
        raise ValueError(
            f"{key} = {norm!r}: not a normalization detectron2.layers.get_norm knows "
            '(e.g. "", "BN", "SyncBN", "FrozenBN", "GN", "LN")'
        ) from None
    return norm


def check_iou_thresholds(thresholds, key: str) -> list:
    """[negative below, positive from] IoUs: two sorted values in (0, 1]."""
    values = list(thresholds)
    require(
        len(values) == 2 and 0 < values[0] <= values[1] <= 1,
        key,
        thresholds,
        "needs two IoUs [negative below, positive from] with 0 < first <= second <= 1",
    )
    return values
