"""SRN's four losses and their normalization, on hand-made labels whose values are worked out by hand."""

import math

import pytest
import torch

from srn_d2.modeling import LevelPlan, TwoStepPredictions
from srn_d2.modeling.anchor_labelling import AnchorLabels
from srn_d2.modeling.box_regression import SingleBoxTransform
from srn_d2.modeling.landmarks import LandmarkCoder
from srn_d2.modeling.srn_losses import SRNLosses
from srn_testing import build_tiny_srn, tiny_srn_cfg

LEVELS = ("p2", "p3", "p4", "p5", "p6", "p7")
ANCHOR = [0.0, 0.0, 10.0, 10.0]
# Two anchors per level, one image. Label 0 = face, 1 = background, -1 = ignored.
STEP1_LABELS = {"p2": [0, 1], "p3": [1, 1], "p4": [-1, 1], "p5": [0, 1], "p6": [1, 1], "p7": [0, 0]}
STEP2_LABELS = {"p2": [0, 1], "p3": [1, -1], "p4": [1, 1], "p5": [1, 1], "p6": [0, 1], "p7": [1, 1]}
# Every face box is its anchor moved right by half its width: target deltas (0.5, 0, 0, 0).
FACE = [5.0, 0.0, 15.0, 10.0]

LN2 = math.log(2.0)
# Logits 0 (p = 0.5), alpha 0.25, gamma 2: a positive costs 0.25 * 0.5^2 * ln 2, a negative 0.75 * 0.5^2 * ln 2.
POSITIVE, NEGATIVE = 0.0625 * LN2, 0.1875 * LN2
# Deltas 0 against 0.5, smooth L1 with beta 0.1: 0.5 - 0.05 per positive.
BOX = 0.45

# Step 1: STC levels p2-p4 hold 1 positive and 4 negatives; STR levels p5-p7 hold 3 positives.
CLS_STEP1_SUM, CLS_STEP1_POS = 1 * POSITIVE + 4 * NEGATIVE, 1
BOX_STEP1_SUM, BOX_STEP1_POS = 3 * BOX, 3
# Step 2: every level, 2 positives and 9 negatives (one ignored).
CLS_STEP2_SUM, BOX_STEP2_SUM, STEP2_POS = 2 * POSITIVE + 9 * NEGATIVE, 2 * BOX, 2


def _losses(normalization):
    """The losses alone, without a model: SRN's plan, coding and loss parameters."""
    plan = LevelPlan()
    losses = SRNLosses(
        plan,
        1,
        SingleBoxTransform((1.0, 1.0, 1.0, 1.0)),
        LandmarkCoder((1.0, 1.0)),
        normalization=normalization,
        normalizer_momentum=0.0,
    )
    anchors = {level: torch.tensor([ANCHOR, ANCHOR]) for level in LEVELS}

    def maps(levels, dim):
        return {level: torch.zeros(1, 2, dim) for level in levels}

    predictions = TwoStepPredictions(
        maps(plan.stc_levels, 1), maps(plan.str_levels, 4), maps(LEVELS, 1), maps(LEVELS, 4)
    )
    gt_boxes = {level: torch.tensor([[FACE, FACE]]) for level in LEVELS}

    def labels(table):
        return AnchorLabels(
            {level: torch.tensor([table[level]]) for level in LEVELS}, gt_boxes, None
        )

    values, stats = losses(
        anchors, anchors, predictions, labels(STEP1_LABELS), labels(STEP2_LABELS)
    )
    assert (
        stats["num_pos_cls_step1"].item() == CLS_STEP1_POS
        and stats["num_pos_cls_step2"].item() == STEP2_POS
    )
    return {key: value.item() for key, value in values.items()}


N_S1 = CLS_STEP1_POS + BOX_STEP1_POS  # step 1's positives on the STC and STR levels together: 4


@pytest.mark.parametrize(
    "normalization, cls_step1, box_step1",
    [
        ("per_loss", CLS_STEP1_POS, BOX_STEP1_POS),  # each loss by its own positives
        ("per_step", N_S1, N_S1),  # both step-1 losses by the step-1 positives of all its levels
        ("step2", STEP2_POS, STEP2_POS),  # every loss by the step-2 positives
    ],
)
def test_each_loss_divided_by_its_normalizer(normalization, cls_step1, box_step1):
    losses = _losses(normalization)
    assert losses["loss_cls_step1"] == pytest.approx(CLS_STEP1_SUM / cls_step1, rel=1e-6)
    assert losses["loss_box_step1"] == pytest.approx(BOX_STEP1_SUM / box_step1, rel=1e-6)
    # Step 2 is divided by its own positives under every normalization.
    assert losses["loss_cls_step2"] == pytest.approx(CLS_STEP2_SUM / STEP2_POS, rel=1e-6)
    assert losses["loss_box_step2"] == pytest.approx(BOX_STEP2_SUM / STEP2_POS, rel=1e-6)


def test_an_unknown_normalization_names_its_key():
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.LOSS_NORMALIZATION = "per_image"
    with pytest.raises(ValueError, match="MODEL.SRN.LOSS_NORMALIZATION = 'per_image'"):
        build_tiny_srn(cfg)


@pytest.mark.parametrize("init", ["normal", "xavier"])
def test_head_init(init):
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.HEAD_INIT = init
    head = build_tiny_srn(cfg).head.shared
    weight = head.cls_subnet[0].weight
    fan_in = weight[0].numel()
    if init == "normal":
        assert weight.std().item() == pytest.approx(0.01, rel=0.05)
    else:
        # Caffe2's XavierFill: U(-sqrt(3 / fan_in), sqrt(3 / fan_in)), standard deviation 1 / sqrt(fan_in).
        assert weight.abs().max().item() <= math.sqrt(3 / fan_in)
        assert weight.std().item() == pytest.approx(1 / math.sqrt(fan_in), rel=0.05)
    assert torch.count_nonzero(head.cls_subnet[0].bias) == 0
    # Either way the classification bias starts every anchor at PRIOR_PROB.
    assert torch.sigmoid(head.cls_score.bias).allclose(torch.tensor(cfg.MODEL.SRN.PRIOR_PROB))
