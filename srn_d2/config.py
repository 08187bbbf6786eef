"""Config keys added by srn_d2, in Detectron2's ``add_*_config`` convention.

Defaults follow the paper (Chi et al., AAAI 2019). Where the paper is silent
they follow the authors' released inference code; where the two disagree, the
comment names the other value, and ``SRN_R_50_official.yaml`` sets the
released ones. docs/DESIGN.md lists every paper-vs-release difference.
Checks of the values live with the code that reads them (``srn_d2.errors.require``);
reading config files safely lives in ``srn_d2.engine.config_files``.
"""

from .utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import math

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

__all__ = ["add_srn_config", "get_srn_cfg"]

# Keys of earlier srn_d2 versions: a config that still sets one gets an error naming its successor.
RENAMED_KEYS = {
    "MODEL.SRN.STC_NEG_THRESH": (
        "MODEL.SRN.STC_MIN_FACE_PROB",
        "it keeps anchors whose face probability is at least 1 - STC_NEG_THRESH",
    ),
    "MODEL.SRN.NO_SCORE_FLOOR_BELOW_CELLS": ("MODEL.SRN.SCORE_THRESH_TEST_MIN_CELLS", "same value"),
    "MODEL.SRN.LEGACY_PLUS_ONE": (
        "MODEL.SRN.NMS_AREA_PLUS_ONE",
        "it covers NMS only; TEST.AUG.SRN.INCLUSIVE_PIXEL_BOXES covers the multi-scale test's geometry",
    ),
    "MODEL.SRN.MATCHER_MAX_ELEMENTS": ("MODEL.SRN.MATCHER_MAX_PAIRS", "same value"),
    "MODEL.ANCHOR_GENERATOR.LEGACY_SCALES": (
        "MODEL.LEGACY_ANCHOR_GENERATOR.STRIDE_MULTIPLES",
        "same value",
    ),
}


def get_srn_cfg() -> CN:
    """Detectron2's default config with srn_d2's keys (and the models and datasets they name registered)."""
    cfg = get_cfg()
    add_srn_config(cfg)
    return cfg


def add_srn_config(cfg: CN) -> None:
    """Add the keys of SRN, the face datasets, augmentation, evaluation and TTA to ``cfg``.

    Also registers what the keys name, as importing ``srn_d2.modeling`` and
    ``srn_d2.data`` does: the meta-architecture, backbones, heads, anchor
    generator and the face datasets.
    """
    from . import data, modeling  # noqa: F401  (registers the models and datasets the keys name)

    _add_model_config(cfg)
    _add_input_config(cfg)
    _add_test_config(cfg)
    _add_evaluation_config(cfg)
    _add_solver_config(cfg)
    for old, (new, note) in RENAMED_KEYS.items():
        cfg.register_renamed_key(old, new, message=note)


def _add_solver_config(cfg):
    # "SGD" (Detectron2's: momentum SOLVER.MOMENTUM, Nesterov SOLVER.NESTEROV), the paper's, or
    # "AdamW" (betas 0.9 / 0.999), which trains the CPU-scale models from scratch in fewer steps.
    cfg.SOLVER.OPTIMIZER = "SGD"
    # A moving average of the weights while training (srn_d2.engine.ema; the key names are d2go's).
    cfg.MODEL_EMA = CN()
    # Off: the model keeps the weights of its last iteration. On: after the last iteration it
    # takes the average, which the final checkpoint, the final evaluation and predictors see.
    cfg.MODEL_EMA.ENABLED = False
    # Weight of the average so far at each iteration; the average spans about 1 / (1 - DECAY)
    # iterations: 0.99 suits the 300-step CPU schedules, long schedules want more (0.999 and up).
    cfg.MODEL_EMA.DECAY = 0.99
    # True: training repeats bit for bit with the same SEED, on the CPU or a GPU
    # (torch.use_deterministic_algorithms), or stops at start naming the key to change (on a GPU:
    # MODEL.SRN.FUSE_UPSAMPLE "nearest", CUDNN_BENCHMARK False). False: a GPU's atomic additions
    # make runs drift apart a little, at full speed (srn_d2.engine.determinism).
    cfg.DETERMINISTIC = False


def _add_model_config(cfg):
    _C = cfg
    _C.MODEL.SRN = CN()
    # Bottom-up network under the SRN neck: any BACKBONE_REGISTRY builder whose
    # outputs include the four features of MODEL.SRN.IN_FEATURES (strides 4..32).
    _C.MODEL.SRN.BOTTOM_UP = "build_resnet_backbone"
    # The bottom-up outputs used as C2..C5, finest first.
    _C.MODEL.SRN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    # Channels of every C-feature (first step) and P-feature (second step), and of the head.
    _C.MODEL.SRN.OUT_CHANNELS = 256
    # C6 = 3x3/2 conv on C5 to this many channels; C7 = 3x3/2 conv on C6 to C7_CHANNELS.
    _C.MODEL.SRN.C6_CHANNELS = 1024
    _C.MODEL.SRN.C7_CHANNELS = 256
    # Top-down upsampling of the second-step FPN: "bilinear" (released code; the
    # paper does not say) or "nearest" (Detectron2's FPN).
    _C.MODEL.SRN.FUSE_UPSAMPLE = "bilinear"
    # align_corners of the bilinear top-down upsampling (released model: True,
    # the behaviour of the torch 0.3 it was trained with).
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
    # Normalization after each 3x3 conv of the head's towers ("" = none; "GN" to train from scratch).
    _C.MODEL.SRN.HEAD_NORM = ""
    # Number of 3x3 conv layers per tower in RetinaNetStyleHead.
    _C.MODEL.SRN.NUM_CONVS = 4
    # RFE: channels of each of its four branches.
    _C.MODEL.SRN.RFE_BRANCH_CHANNELS = 64
    # Activations of the head recomputed in backward instead of kept, in training:
    # "" none; "rfe" the RFE blocks' branches (about 5x their input's size, cheap
    # to recompute); "towers" whole towers (least memory, about a fifth more time).
    _C.MODEL.SRN.HEAD_ACTIVATION_CHECKPOINT = "rfe"
    # Kernel of the final logit / delta convs (released model: 1; RetinaNet: 3).
    _C.MODEL.SRN.PREDICTOR_KERNEL_SIZE = 1
    # Foreground classes: 1 (faces); logits are sigmoid, one per class and anchor.
    _C.MODEL.SRN.NUM_CLASSES = 1
    # Initial face probability of every anchor (sets the logit bias), as RetinaNet's.
    _C.MODEL.SRN.PRIOR_PROB = 0.01
    # Initial weights of every conv of the head (towers, RFE, predictors), biases 0:
    # "normal", N(0, 0.01) as RetinaNet's head; or "xavier", the paper's words for all
    # new layers ("initialized by the xavier method"), Caffe2's XavierFill as the neck's.
    _C.MODEL.SRN.HEAD_INIT = "normal"

    # Levels with Selective Two-step Classification and Regression.
    _C.MODEL.SRN.STC_LEVELS = ["p2", "p3", "p4"]
    _C.MODEL.SRN.STR_LEVELS = ["p5", "p6", "p7"]
    # STC: step 2 keeps an anchor of an STC level only if step 1 gives it at least this
    # face probability, in training and inference. The paper states the same rule the
    # other way round: anchors whose negative confidence exceeds 0.99 are rejected.
    _C.MODEL.SRN.STC_MIN_FACE_PROB = 0.01

    # Anchor matching: [negative below, positive from] IoU for each step.
    _C.MODEL.SRN.STEP1_IOU_THRESHOLDS = [0.3, 0.7]
    _C.MODEL.SRN.STEP2_IOU_THRESHOLDS = [0.4, 0.5]
    # Labels of the three IoU bands (Detectron2's Matcher): background, ignored, face.
    _C.MODEL.SRN.IOU_LABELS = [0, -1, 1]
    # Make each face's best anchor positive even below the positive IoU, in both steps
    # (Detectron2's allow_low_quality_matches). The paper does not mention the rule; only
    # ~26% of WIDER faces reach IoU 0.7 with an SRN anchor (docs/DESIGN.md, "Matching").
    _C.MODEL.SRN.ALLOW_LOW_QUALITY_MATCHES = True
    # Most (face, anchor) pairs or IoUs the matcher holds at once (srn_d2.modeling.SparseGridMatcher):
    # bounds its memory on crowded images (about 20 bytes each) without slowing it.
    _C.MODEL.SRN.MATCHER_MAX_PAIRS = 1 << 19

    # Weights (dx, dy, dw, dh) of the box coding; the released model uses 1, 1, 1, 1.
    _C.MODEL.SRN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
    # Largest log-scale change of a box's width / height when decoding deltas
    # (Detectron2's default, log(1000 / 16)); the released model clamps nothing (.inf).
    _C.MODEL.SRN.BBOX_REG_SCALE_CLAMP = math.log(1000.0 / 16)
    # Sigmoid focal loss of both steps' classification: alpha (weight of positives) and gamma.
    _C.MODEL.SRN.FOCAL_LOSS_ALPHA = 0.25
    _C.MODEL.SRN.FOCAL_LOSS_GAMMA = 2.0
    # Smooth-L1 beta of both steps' regression (0 = L1), as Detectron2's RetinaNet.
    _C.MODEL.SRN.SMOOTH_L1_LOSS_BETA = 0.1
    # Momentum of the running positive-anchor counts that normalize the losses
    # (Detectron2's RetinaNet uses 0.9); 0.0 = this batch's counts alone.
    _C.MODEL.SRN.LOSS_NORMALIZER_MOMENTUM = 0.9
    # What each loss sum is divided by. "per_step", the paper's: both step-1 losses by
    # N_s1 and both step-2 losses by N_s2, "the numbers of positive anchors in the first
    # and second steps" (N_s1 counts step 1's positives on every level a step-1 loss
    # trains, STC and STR levels together). "per_loss": each loss by its own positives,
    # as RetinaNet does for its two losses; the step-1 box loss then has few positives
    # (the STR levels' alone), and each of them weighs several times a step-2 positive.
    # "step2": all four losses by N_s2, so that a step-1 positive weighs as much as a
    # step-2 one whatever levels step 1 trains (the study's test of why the paper's
    # "+ STR" row, whose N_s1 counts the STR levels alone, loses localization).
    _C.MODEL.SRN.LOSS_NORMALIZATION = "per_step"

    # Inference. Candidates of each level: step-2 score above SCORE_THRESH_TEST,
    # then that level's best TOPK_CANDIDATES_TEST; NMS over all levels; at most
    # TEST.DETECTIONS_PER_IMAGE kept (Detectron2's default 100; Base-SRN.yaml sets 750).
    # Paper: top 2000, NMS 0.5. Released code: top 6000 per level, NMS 0.4.
    _C.MODEL.SRN.SCORE_THRESH_TEST = 0.05
    _C.MODEL.SRN.TOPK_CANDIDATES_TEST = 2000
    _C.MODEL.SRN.NMS_THRESH_TEST = 0.5
    # SCORE_THRESH_TEST applies to levels whose maps have at least this many cells;
    # smaller maps keep every candidate (released code: 120). 0 applies it everywhere.
    _C.MODEL.SRN.SCORE_THRESH_TEST_MIN_CELLS = 0
    # NMS measures box areas as (x2 - x1 + 1) * (y2 - y1 + 1), as the released code,
    # whose boxes are inclusive pixel indices; False: (x2 - x1) * (y2 - y1), as Detectron2.
    _C.MODEL.SRN.NMS_AREA_PLUS_ONE = False

    # Five facial landmarks per face (the image's left and right eye, nose, left and right
    # mouth corner), predicted beside each step-2 box by one more predictor conv on the box
    # tower (srn_d2/modeling/landmarks.py), as Detectron2 keypoints (pred_keypoints).
    _C.MODEL.SRN.LANDMARKS = CN()
    # Predict them. Training then needs datasets with keypoints (widerface_train_landmarks,
    # mini_faces); the mapper moves them with their faces. A face without landmarks still
    # trains its box and class.
    _C.MODEL.SRN.LANDMARKS.ENABLED = False
    # Weight of the landmark loss: smooth L1 (MODEL.SRN.SMOOTH_L1_LOSS_BETA) over the ten
    # offsets of each step-2 positive whose face has landmarks, divided by the running count
    # of those positives. 0.5 keeps RetinaFace's ratio of landmark to box loss per coordinate
    # (its weights 1 over ten coordinates against 2 over four: 1 to 5).
    _C.MODEL.SRN.LANDMARKS.LOSS_WEIGHT = 0.5

    # The narrow ResNet of the CPU-scale configs ("build_mini_resnet_backbone" as
    # MODEL.SRN.BOTTOM_UP, "build_mini_resnet_fpn_backbone" for RetinaNet).
    _C.MODEL.MINI_RESNET = CN()
    # Output channels of the stem (a 7x7/2 conv and a 3x3/2 max pool, as ResNet's).
    _C.MODEL.MINI_RESNET.STEM_CHANNELS = 32
    # Channels of res2..res5.
    _C.MODEL.MINI_RESNET.WIDTHS = [32, 64, 128, 256]
    # BasicBlocks in each of res2..res5.
    _C.MODEL.MINI_RESNET.BLOCKS_PER_STAGE = [1, 1, 1, 1]
    # Normalization of every conv (GroupNorm trains from scratch at small batches).
    _C.MODEL.MINI_RESNET.NORM = "GN"

    # Any timm model as a backbone ("build_timm_backbone" as MODEL.SRN.BOTTOM_UP,
    # "build_timm_fpn_backbone" for RetinaNet): its stride-4..32 features become res2..res5.
    _C.MODEL.TIMM = CN()
    # A timm model name (timm.list_models()) with features at strides 4, 8, 16 and 32.
    _C.MODEL.TIMM.NAME = "mobilenetv3_large_100"
    # Start from timm's ImageNet weights (timm downloads them; needs internet access); not loaded
    # when MODEL.WEIGHTS names a checkpoint, whose weights replace them.
    _C.MODEL.TIMM.PRETRAINED = False
    # As MODEL.RESNETS.FREEZE_AT: 0 trains all, 1 freezes the stem, k the stem and the stages up to stride 2 ** k.
    _C.MODEL.TIMM.FREEZE_AT = 0
    # Its BatchNorms: "FrozenBN" (fine-tuning pretrained weights), "BN", or "GN" (from scratch, small batches).
    _C.MODEL.TIMM.NORM = "FrozenBN"

    # The released model's anchor tiling (MODEL.ANCHOR_GENERATOR.NAME "SRNLegacyAnchorGenerator").
    # That generator reads these keys and MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS only;
    # it ignores MODEL.ANCHOR_GENERATOR.SIZES and OFFSET.
    _C.MODEL.LEGACY_ANCHOR_GENERATOR = CN()
    # Anchor sides as multiples of each level's stride-sized window (one anchor per multiple).
    _C.MODEL.LEGACY_ANCHOR_GENERATOR.STRIDE_MULTIPLES = [2.0, 2.828427]


def _add_input_config(cfg):
    _C = cfg
    # The paper's training augmentation (srn_d2.data.build_srn_train_augmentation);
    # False uses Detectron2's default (resize shortest edge, flip).
    _C.INPUT.SRN_AUGMENTATION = True
    # SSD's photometric distortion: each of the four changes below is applied
    # with probability 0.5, contrast before or after the color changes.
    _C.INPUT.PHOTOMETRIC = CN()
    _C.INPUT.PHOTOMETRIC.ENABLED = True
    # Brightness: add U(-delta, delta) to every pixel value (0..255).
    _C.INPUT.PHOTOMETRIC.BRIGHTNESS_DELTA = 32
    # Contrast: multiply every pixel value by U(low, high).
    _C.INPUT.PHOTOMETRIC.CONTRAST_RANGE = (0.5, 1.5)
    # Saturation: multiply the HSV saturation by U(low, high).
    _C.INPUT.PHOTOMETRIC.SATURATION_RANGE = (0.5, 1.5)
    # Hue: rotate the HSV hue by U(-delta, delta) degrees.
    _C.INPUT.PHOTOMETRIC.HUE_DELTA = 18
    # Zoom out: place the image on a larger canvas.
    _C.INPUT.EXPAND = CN()
    _C.INPUT.EXPAND.ENABLED = True
    # Expansion ratio drawn from U(1, MAX_RATIO); the canvas is filled with the mean color.
    _C.INPUT.EXPAND.MAX_RATIO = 2.0
    # Crop a square patch: one of side = the shorter side, or one of a random side (below).
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
    # Pixel budget: enlarged passes keep height * width under MAX_SIZE ** 2
    # (2100 released; 1400 for GPUs with 11-12 GB).
    _C.TEST.AUG.SRN.MAX_SIZE = 2100
    # Scale of the shrunk pass (images under the budget).
    _C.TEST.AUG.SRN.SHRINK = 0.5
    # Shrunk pass keeps boxes larger than this (pixels, in original coordinates).
    _C.TEST.AUG.SRN.SHRINK_MIN_BOX = 30.0
    # Enlarged passes scale by ENLARGE_BASE ** t, t = 1, 2, ... while under the budget.
    _C.TEST.AUG.SRN.ENLARGE_BASE = 1.5
    # Enlarged passes keep boxes smaller than this (pixels, in original coordinates).
    _C.TEST.AUG.SRN.ENLARGE_MAX_BOX = 100.0
    # Add a pass on the horizontally flipped image.
    _C.TEST.AUG.SRN.FLIP = True
    # Bounding-box voting merges boxes of IoU >= this (legacy +1 areas).
    _C.TEST.AUG.SRN.VOTE_IOU = 0.5
    # The passes treat boxes as inclusive pixel indices, as the released code: a box
    # spans x2 - x1 + 1 pixels (the size filters), a flip maps x to W - 1 - x, a resize
    # maps pixel centers, clipping stops at W - 1. False: Detectron2's continuous
    # coordinates (x2 - x1, W - x, corners, W).
    _C.TEST.AUG.SRN.INCLUSIVE_PIXEL_BOXES = False


def _add_evaluation_config(cfg):
    _C = cfg
    # WIDER FACE evaluation: directory of the official .mat ground truth for
    # widerface_val ("" = <datasets root>/widerface/eval_tools/ground_truth).
    _C.TEST.WIDERFACE_GT_DIR = ""
    # How submission files write boxes, and so what the evaluation scores:
    # "precise" (x y w h to 0.01 px, w = x2 - x1, scores to 1e-6) or "released"
    # (the authors' files: integers, w = x2 - x1 + 1, scores to 3 decimals).
    _C.TEST.WIDERFACE_SUBMISSION_FORMAT = "precise"
