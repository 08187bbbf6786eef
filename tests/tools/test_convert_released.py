"""The released-weight converter on a checkpoint laid out as the authors' file."""

from collections import OrderedDict

import pytest
import torch

from released_network import ReleasedSRN
from srn_d2.checkpoint import load_inference_weights
from srn_d2.released_checkpoint import (
    DEFAULT_CONFIG,
    ConversionError,
    build_target_model,
    check_against_model,
    convert,
    convert_state_dict,
)
from srn_d2.tools.convert_released import main


def released_shapes():
    """Names and shapes of the released ResNet-50 SRN checkpoint (its BatchNorm counters included)."""
    return OrderedDict((k, tuple(v.shape)) for k, v in ReleasedSRN().state_dict().items())


@pytest.fixture(scope="module")
def released():
    generator = torch.Generator().manual_seed(0)
    return OrderedDict(
        (k, torch.randn(shape, generator=generator) if shape else torch.tensor(7))
        for k, shape in released_shapes().items()
    )


@pytest.fixture(scope="module")
def model():
    return build_target_model(DEFAULT_CONFIG)


def test_convert_and_load_into_the_official_model(tmp_path, released, model):
    src = tmp_path / "srn_released.pth"
    torch.save({"epoch": 130, "state_dict": {f"module.{k}": v for k, v in released.items()}}, src)
    out = tmp_path / "srn_d2.pth"
    main([str(src), str(out)])
    # Tensors and strings only: loadable without unpickling any code.
    payload = torch.load(out, weights_only=True)
    assert payload["matching_heuristics"] is False and "__author__" in payload

    load_inference_weights(model, str(out))

    bottom_up = model.backbone.bottom_up
    head = model.head.shared
    pairs = [
        (released["layer5.weight"], model.backbone.c6.weight),
        (released["layer6.bias"], model.backbone.c7.bias),
        (released["bn1.running_mean"], bottom_up.stem.conv1.norm.running_mean),
        (released["layer4.2.bn3.running_var"], bottom_up.res5[2].conv3.norm.running_var),
        (released["layer2.0.downsample.0.weight"], bottom_up.res3[0].shortcut.weight),
        (released["layer3.0.downsample.1.bias"], bottom_up.res4[0].shortcut.norm.bias),
        (released["layer1.1.conv2.weight"], bottom_up.res2[1].conv2.weight),
        (released["c4_lateral.weight"], model.backbone.c4_lateral.weight),
        (released["p7_conv.bias"], model.backbone.p7_conv.bias),
        (released["cls_subnet.2.branch1.2.weight"], head.cls_subnet[2].branches[1][2].weight),
        (released["box_subnet.2.cated_conv.0.weight"], head.bbox_subnet[2].fuse[0].weight),
        (released["box_subnet.3.bias"], head.bbox_subnet[3].bias),
        (released["cls_subnet_pred.bias"], head.cls_score.bias),
        (released["box_subnet_pred.weight"], head.bbox_pred.weight),
    ]
    for expected, loaded in pairs:
        assert torch.equal(expected, loaded)


def test_unknown_key_is_named(released):
    bad = dict(released, **{"extra_head.weight": torch.zeros(1)})
    with pytest.raises(ConversionError, match=r"extra_head\.weight"):
        convert_state_dict(bad)


def test_missing_and_mismatched_keys_are_named(released, model):
    incomplete = {k: v for k, v in released.items() if k != "layer6.bias"}
    converted, source = convert_state_dict(incomplete)
    with pytest.raises(ConversionError, match=r"backbone\.c7\.bias"):
        check_against_model(converted, source, model)

    wrong_shape = dict(released, **{"cls_subnet_pred.weight": torch.zeros(4, 256, 1, 1)})
    converted, source = convert_state_dict(wrong_shape)
    with pytest.raises(
        ConversionError,
        match=r"cls_subnet_pred\.weight \(4, 256, 1, 1\) != head\.shared\.cls_score",
    ):
        check_against_model(converted, source, model)


def test_output_extension_is_checked(tmp_path, model):
    with pytest.raises(ConversionError, match="out.bin"):
        convert(str(tmp_path / "missing.pth"), str(tmp_path / "out.bin"), model)
    # Detectron2 unpickles .pkl weights, which can run code: the converter writes none.
    with pytest.raises(ConversionError, match=r"out.pkl.*\.pth"):
        convert(str(tmp_path / "missing.pth"), str(tmp_path / "out.pkl"), model)


@pytest.mark.parametrize("content", [b"", b"this is a text file\n", b"PK\x03\x04 truncated zip"])
def test_input_that_is_no_checkpoint_is_named(tmp_path, capsys, content):
    src = tmp_path / "not_a_checkpoint.pth"
    src.write_bytes(content)
    assert main([str(src), str(tmp_path / "out.pth")]) == 2
    assert "not_a_checkpoint.pth" in capsys.readouterr().err
    assert not (tmp_path / "out.pth").exists()
