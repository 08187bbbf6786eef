import math

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import ImageList
from detectron2.utils.events import EventStorage

from srn_d2 import model_zoo
from srn_d2.modeling import TwoStepPredictions
from srn_testing import build_tiny_srn, face_instances, random_image, srn_cfg, tiny_srn_cfg

LOSS_KEYS = {"loss_cls_step1", "loss_cls_step2", "loss_box_step1", "loss_box_step2"}


def _logit(p):
    return math.log(p / (1 - p))


def _features_and_predictions(model, image_size, step1_face_prob, step2_logit=0.0):
    """Hand-made P-features (their sizes give the anchors) and head outputs for one image."""
    height, width = image_size
    plan = model.plan
    shapes = {
        level: (math.ceil(height / plan.stride(level)), math.ceil(width / plan.stride(level)))
        for level in plan.levels
    }
    features = {level: torch.zeros(1, 1, *shape) for level, shape in shapes.items()}
    a = 2

    def maps(levels, channels, value):
        return {level: torch.full((1, a * channels, *shapes[level]), value) for level in levels}

    predictions = TwoStepPredictions(
        maps(plan.stc_levels, 1, _logit(step1_face_prob)),
        maps(plan.str_levels, 4, 0.0),
        maps(plan.levels, 1, step2_logit),
        maps(plan.levels, 4, 0.0),
    )
    return features, predictions


def _training_losses(model, predictions, features, image_size, boxes):
    images = ImageList(torch.zeros(1, 3, *image_size), [image_size])
    with EventStorage() as storage:
        losses = model.forward_training(
            images, features, predictions, [face_instances(image_size, boxes)]
        )
        kept = storage.latest()["stc_kept_fraction"][0]
    return losses, kept


@pytest.mark.parametrize("face_prob, kept", [(0.005, False), (0.02, True)])
def test_stc_filters_step2_training(face_prob, kept):
    model = build_tiny_srn()
    image_size = (128, 128)
    boxes = [[10, 10, 20, 22], [40, 40, 100, 110]]
    features, predictions = _features_and_predictions(model, image_size, face_prob)
    losses, kept_fraction = _training_losses(model, predictions, features, image_size, boxes)
    assert kept_fraction == (1.0 if kept else 0.0)
    # Changing step-2 logits on the STC levels changes the step-2 loss only if those anchors were kept.
    for level in model.plan.stc_levels:
        predictions.step2_logits[level] = predictions.step2_logits[level] + 3.0
    changed, _ = _training_losses(model, predictions, features, image_size, boxes)
    assert (changed["loss_cls_step2"] != losses["loss_cls_step2"]).item() == kept
    assert changed["loss_cls_step1"] == losses["loss_cls_step1"]


@pytest.mark.parametrize("face_prob, kept", [(0.005, False), (0.02, True)])
def test_stc_filters_step2_inference(face_prob, kept):
    model = build_tiny_srn().eval()
    model.test_nms_thresh = 1.0
    model.max_detections_per_image = 100_000
    image_size = (64, 64)
    features, predictions = _features_and_predictions(
        model, image_size, face_prob, step2_logit=_logit(0.9)
    )
    result = model.forward_inference(
        ImageList(torch.zeros(1, 3, 64, 64), [image_size]), features, predictions
    )[0]
    num_stc_anchors = sum(2 * math.ceil(64 / s) ** 2 for s in (4, 8, 16))
    num_other = sum(2 * math.ceil(64 / s) ** 2 for s in (32, 64, 128))
    assert len(result) == num_other + (num_stc_anchors if kept else 0)


def test_stc_keep_threshold_follows_config():
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.STC_MIN_FACE_PROB = 0.1
    model = build_tiny_srn(cfg)
    keep = model.stc.keep(torch.tensor([[_logit(0.05)], [_logit(0.2)]]))
    assert keep.tolist() == [False, True]


def test_str_refinement_moves_anchors_by_decoded_deltas():
    model = build_tiny_srn().eval()
    model.test_score_thresh = 0.5
    image_size = (256, 256)
    features, predictions = _features_and_predictions(model, image_size, 0.5, step2_logit=-10.0)
    # One confident anchor on P6 (cell (1, 1), first anchor); step 1 shifts it right by half its width.
    predictions.step2_logits["p6"][0, 0, 1, 1] = 10.0
    predictions.step1_deltas["p6"][0, 0, 1, 1] = 0.5
    anchors = model.level_anchors(features)
    grid_width = 256 // 64
    anchor = anchors["p6"].tensor[(1 * grid_width + 1) * 2]
    result = model.forward_inference(
        ImageList(torch.zeros(1, 3, *image_size), [image_size]), features, predictions
    )[0]
    assert len(result) == 1
    width = anchor[2] - anchor[0]
    expected = anchor + torch.tensor([0.5, 0, 0.5, 0]) * width
    torch.testing.assert_close(result.pred_boxes.tensor[0], expected.clamp(0, 256))
    torch.testing.assert_close(
        model.str.refine(torch.tensor([[0.5, 0, 0, 0]]), anchor[None]), expected[None]
    )


def test_step2_matches_against_refined_anchors():
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.ALLOW_LOW_QUALITY_MATCHES = False
    model = build_tiny_srn(cfg)
    image_size = (256, 256)
    features, predictions = _features_and_predictions(model, image_size, 0.5)
    anchor = model.level_anchors(features)["p5"].tensor[0]
    # Step 1 moves P5's first anchor by 0.6 of its size (IoU 0.09 with where it started);
    # a face exactly there is matched by that refined anchor in step 2.
    deltas = torch.tensor([0.6, 0.6, 0.0, 0.0])
    face = model.str.refine(deltas[None], anchor[None])[0].tolist()

    def step2_positives(step1_deltas):
        predictions.step1_deltas["p5"][0, 0:4, 0, 0] = step1_deltas
        with EventStorage() as storage:
            images = ImageList(torch.zeros(1, 3, *image_size), [image_size])
            model.forward_training(
                images, features, predictions, [face_instances(image_size, [face])]
            )
            return storage.latest()["num_pos_cls_step2"][0]

    assert step2_positives(deltas) == step2_positives(torch.zeros(4)) + 1


def _batch(n=2, size=(96, 128)):
    # Small faces train STC on P2-P4, the large ones STR on P5-P7.
    boxes = [[[10, 12, 30, 37], [40, 5, 125, 95]], [[60, 20, 70, 33], [2, 4, 90, 94]]]
    return [
        {"image": random_image(*size, seed=i), "instances": face_instances(size, boxes[i])}
        for i in range(n)
    ]


@pytest.mark.slow
def test_training_losses_are_finite_and_fall_when_overfitting():
    model = build_tiny_srn()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = _batch()
    history = []
    with EventStorage():
        for _ in range(40):
            losses = model(batch)
            assert set(losses) == LOSS_KEYS
            assert all(torch.isfinite(v) for v in losses.values())
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            history.append({k: v.item() for k, v in losses.items()})
    assert all(history[0][key] > 0 for key in LOSS_KEYS)
    for key in LOSS_KEYS:
        assert history[-1][key] < 0.5 * history[0][key], key


def test_inference_returns_boxes_in_original_coordinates_for_non_square_input():
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.SRN.STC_MIN_FACE_PROB = 0.0
    model = build_tiny_srn(cfg).eval()
    image = random_image(72, 120)
    with torch.no_grad():
        native = model([{"image": image}])[0]["instances"]
        scaled = model([{"image": image, "height": 144, "width": 240}])[0]["instances"]
    assert native.image_size == (72, 120) and scaled.image_size == (144, 240)
    assert len(native) > 0 and len(native) == len(scaled)
    torch.testing.assert_close(scaled.pred_boxes.tensor, native.pred_boxes.tensor * 2)
    assert (
        scaled.pred_boxes.tensor[:, 2].max() <= 240 and scaled.pred_boxes.tensor[:, 3].max() <= 144
    )
    assert set(scaled.get_fields()) == {"pred_boxes", "scores", "pred_classes"}


def test_detections_capped_and_nms_applied():
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.SRN.STC_MIN_FACE_PROB = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 7
    model = build_tiny_srn(cfg).eval()
    with torch.no_grad():
        result = model([{"image": random_image(64, 64)}])[0]["instances"]
    assert len(result) == 7
    from detectron2.structures import pairwise_iou

    iou = pairwise_iou(result.pred_boxes, result.pred_boxes)
    assert (iou.triu(diagonal=1) < 0.5).all()


def test_unknown_level_names_are_reported():
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.STC_LEVELS = ["p2", "p9"]
    with pytest.raises(ValueError, match="STC_LEVELS.*p9"):
        build_model(cfg)


def test_bottom_up_features_checked():
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.IN_FEATURES = ["s2", "s3", "s4", "res5"]
    with pytest.raises(ValueError, match="IN_FEATURES.*res5"):
        build_model(cfg)


@pytest.mark.parametrize(
    "config_file",
    [n for n in model_zoo.list_config_files() if n.startswith("SRN") and n.endswith(".yaml")],
)
def test_srn_configs_load_and_build(config_file):
    cfg = srn_cfg(config_file)
    model = build_model(cfg)
    assert type(model).__name__ == "SRN"
    maps = [torch.zeros(1, 1, 1024 // s, 1024 // s) for s in (4, 8, 16, 32, 64, 128)]
    assert sum(len(a) for a in model.anchor_generator(maps)) == 174_720


def test_empty_stc_and_str_levels_train():
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.STC_LEVELS = []
    cfg.MODEL.SRN.STR_LEVELS = []
    model = build_tiny_srn(cfg)
    with EventStorage():
        losses = model(_batch(1))
    assert losses["loss_cls_step1"].item() == 0 and losses["loss_box_step1"].item() == 0
    assert losses["loss_cls_step2"].item() > 0


def test_ablations_build_only_the_step1_layers_they_use():
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.STR_LEVELS = []
    model = build_tiny_srn(cfg)
    assert not hasattr(model.backbone, "c6") and not hasattr(model.backbone, "c5_conv")
    assert model.head_in_features[:3] == ["c2", "c3", "c4"] and model.plan.step1_levels == (
        "p2",
        "p3",
        "p4",
    )
    cfg.MODEL.SRN.STR_LEVELS = ["p6"]
    cfg.MODEL.SRN.STC_LEVELS = []
    model = build_tiny_srn(cfg)
    assert hasattr(model.backbone, "c6") and not hasattr(model.backbone, "c7")
    assert model.head_in_features[0] == "c6"
    with EventStorage():
        losses = model(_batch(1))
    assert losses["loss_cls_step1"].item() == 0 and torch.isfinite(losses["loss_box_step1"])


def _flat(cfg, prefix=""):
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


@pytest.mark.parametrize(
    "ablation, changed_keys, removed, added",
    [
        # No STC: step 1 classifies nothing, so C2..C4 and their 1x1 reductions go.
        (
            "noSTC",
            {"MODEL.SRN.STC_LEVELS": []},
            {"backbone.c2_conv", "backbone.c3_conv", "backbone.c4_conv"},
            set(),
        ),
        # No STR: step 1 regresses nothing, so C5..C7 (and the extra layers C6, C7) go.
        (
            "noSTR",
            {"MODEL.SRN.STR_LEVELS": []},
            {
                "backbone.c5_conv",
                "backbone.c6_conv",
                "backbone.c7_conv",
                "backbone.c6",
                "backbone.c7",
            },
            set(),
        ),
        # No RFE: RetinaNet's four 3x3 convs per tower (at 0, 2, 4, 6, ReLUs between)
        # replace conv, RFE, conv (at 0, 2, 3).
        (
            "noRFE",
            {"MODEL.SRN.HEAD_NAME": "RetinaNetStyleHead"},
            {
                f"head.shared.{t}.{m}"
                for t in ("cls_subnet", "bbox_subnet")
                for m in ("2.branches", "2.fuse", "3")
            },
            {
                f"head.shared.{t}.{m}"
                for t in ("cls_subnet", "bbox_subnet")
                for m in ("2", "4", "6")
            },
        ),
    ],
)
def test_ablation_configs_differ_from_srn_exactly_as_intended(
    ablation, changed_keys, removed, added
):
    full, other = (
        srn_cfg("SRN_R_50_FPN_widerface.yaml"),
        srn_cfg(f"SRN_R_50_FPN_widerface_{ablation}.yaml"),
    )
    full_keys, other_keys = _flat(full), _flat(other)
    assert {k: v for k, v in other_keys.items() if full_keys[k] != v} == changed_keys

    def modules(cfg):
        # Parameter names up to the module that owns them ("head.shared.cls_subnet.2.fuse").
        names = {name.rsplit(".", 1)[0] for name, _ in build_model(cfg).named_parameters()}
        return {
            ".".join(n.split(".")[:5]) if "_subnet." in n else ".".join(n.split(".")[:2])
            for n in names
        }

    full_modules, other_modules = modules(full), modules(other)
    assert full_modules - other_modules == removed
    assert other_modules - full_modules == added


@pytest.mark.parametrize(
    "ablation, changed_keys",
    [
        ("noSTC", {"MODEL.SRN.STC_LEVELS": []}),
        ("noSTR", {"MODEL.SRN.STR_LEVELS": []}),
        # Four 3x3 convs per tower: RetinaNet_mini's head.
        ("noRFE", {"MODEL.SRN.HEAD_NAME": "RetinaNetStyleHead"}),
    ],
)
def test_mini_ablation_configs_differ_from_srn_mini_in_one_part(ablation, changed_keys):
    full, other = srn_cfg("SRN_mini.yaml"), srn_cfg(f"SRN_mini_{ablation}.yaml")
    full_keys, other_keys = _flat(full), _flat(other)
    changed = {k: v for k, v in other_keys.items() if full_keys[k] != v}
    assert changed == {**changed_keys, "OUTPUT_DIR": f"output/SRN_mini_{ablation}"}
    assert other.MODEL.SRN.NUM_CONVS == srn_cfg("RetinaNet_mini.yaml").MODEL.RETINANET.NUM_CONVS


@pytest.mark.parametrize(
    "channels, groups", [(256, 32), (64, 32), (48, 16), (16, 16), (8, 8), (20, 4)]
)
def test_group_norm_takes_detectron2s_32_groups_where_the_channels_allow_it(channels, groups):
    from srn_d2.modeling.norm import get_norm

    norm = get_norm("GN", channels)
    assert (norm.num_groups, norm.num_channels) == (groups, channels)
    x = torch.randn(2, channels, 3, 5)
    # Each group of channels // groups channels is normalized on its own.
    expected = torch.nn.functional.group_norm(x, groups, norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(norm(x), expected)
