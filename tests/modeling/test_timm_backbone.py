"""timm models as SRN's bottom-up network and under RetinaNet's FPN (random weights)."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from srn_d2.modeling import TimmBackbone
from srn_testing import face_instances, random_image, srn_cfg

NEW_CONFIGS = [
    "SRN_MobileNetV3_widerface.yaml",
    "RetinaNet_MobileNetV3_widerface.yaml",
    "SRN_EfficientNetB0_widerface.yaml",
    "RetinaNet_EfficientNetB0_widerface.yaml",
    "SRN_MobileNetV3_mini.yaml",
    "SRN_MobileNetV3Small_widerface.yaml",
    "SRN_MobileNetV3Small_mini.yaml",
    "RetinaNet_MobileNetV3Small_widerface.yaml",
    "RetinaNet_MobileNetV3Small_mini.yaml",
    "RetinaNet_MobileNetV3_mini.yaml",
]


@pytest.mark.parametrize("name", NEW_CONFIGS)
def test_config_trains_a_step_and_detects(name):
    cfg = srn_cfg(name)
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = [
        {
            "image": random_image(128, 160, seed=i),
            "instances": face_instances((128, 160), [[10, 12, 40, 50], [60, 20, 140, 120]]),
        }
        for i in range(2)
    ]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with EventStorage():
        losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values()) and sum(losses.values()) > 0
    sum(losses.values()).backward()
    optimizer.step()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.") for k in changed) and any("head" in k for k in changed)
    model.eval()
    with torch.no_grad():
        instances = model([{"image": random_image(97, 131)}])[0]["instances"]
    assert instances.image_size == (97, 131)
    assert set(instances.get_fields()) == {"pred_boxes", "scores", "pred_classes"}


def test_a_model_without_stride_4_features_is_named():
    cfg = srn_cfg("SRN_MobileNetV3_widerface.yaml")
    cfg.MODEL.TIMM.NAME = "vit_small_patch16_224"
    with pytest.raises(
        ValueError,
        match=r"MODEL.TIMM.NAME = 'vit_small_patch16_224': has features at strides "
        r"\[16, 16, 16\].*missing \[4, 8, 32\]",
    ):
        build_model(cfg)


def test_outputs_are_res2_to_res5_at_strides_4_to_32():
    backbone = TimmBackbone(model_name="efficientnet_b0", norm="BN")
    shapes = backbone.output_shape()
    assert {k: (v.stride, v.channels) for k, v in shapes.items()} == {
        "res2": (4, 24),
        "res3": (8, 40),
        "res4": (16, 112),
        "res5": (32, 320),
    }
    features = backbone(torch.zeros(1, 3, 97, 131))
    assert {k: tuple(v.shape[-2:]) for k, v in features.items()} == {
        "res2": (25, 33),
        "res3": (13, 17),
        "res4": (7, 9),
        "res5": (4, 5),
    }


@pytest.mark.parametrize(
    "model_name, freeze_at, frozen_prefixes, trained_prefix",
    [
        # Stem: everything before the stride-4 stage (blocks.1), MobileNetV3's stride-2 block included.
        ("mobilenetv3_large_100", 1, ("conv_stem", "bn1", "blocks.0."), "blocks.1."),
        # Stem and the stride-4 and stride-8 stages.
        (
            "mobilenetv3_large_100",
            3,
            ("conv_stem", "blocks.0.", "blocks.1.", "blocks.2."),
            "blocks.3.",
        ),
        # timm flattens ConvNeXt's nested names in its feature wrapper.
        ("convnext_tiny", 2, ("stem_0", "stages_0."), "stages_1."),
    ],
)
def test_freeze_at_follows_detectron2s_stages(
    model_name, freeze_at, frozen_prefixes, trained_prefix
):
    backbone = TimmBackbone(model_name=model_name, freeze_at=freeze_at, norm="FrozenBN")
    for name, parameter in backbone.body.named_parameters():
        if name.startswith(frozen_prefixes):
            assert not parameter.requires_grad, name
        if name.startswith(trained_prefix):
            assert parameter.requires_grad, name
    backbone = TimmBackbone(model_name=model_name, freeze_at=5, norm="FrozenBN")
    assert next(backbone.body.parameters()).requires_grad is False


def test_norm_choices():
    from timm.layers import BatchNormAct2d, GroupNormAct

    frozen = TimmBackbone(model_name="mobilenetv3_large_100", norm="FrozenBN")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    grouped = TimmBackbone(model_name="mobilenetv3_large_100", norm="GN")
    assert not any(isinstance(m, (BatchNormAct2d, torch.nn.BatchNorm2d)) for m in grouped.modules())
    # The activation that followed each BatchNorm still follows its GroupNorm.
    acts = [type(m.act).__name__ for m in grouped.modules() if isinstance(m, GroupNormAct)]
    assert {"Hardswish", "ReLU", "Identity"} <= set(acts)
    with pytest.raises(ValueError, match="MODEL.TIMM.NORM.*FREEZE_AT"):
        TimmBackbone(model_name="mobilenetv3_large_100", freeze_at=2, norm="BN")


@pytest.mark.parametrize("weights, downloads", [("", True), ("model_final.pth", False)])
def test_imagenet_weights_are_fetched_only_to_start_training(monkeypatch, weights, downloads):
    import timm

    asked = []
    real = timm.create_model
    monkeypatch.setattr(
        timm,
        "create_model",
        lambda *a, **k: asked.append(k["pretrained"]) or real(*a, **{**k, "pretrained": False}),
    )
    cfg = srn_cfg("SRN_MobileNetV3Small_widerface.yaml")
    cfg.MODEL.TIMM.PRETRAINED, cfg.MODEL.WEIGHTS = True, weights
    build_model(cfg)
    assert asked == [downloads]
