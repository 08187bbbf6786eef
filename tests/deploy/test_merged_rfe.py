"""The merged RFE that ONNX exports trace: the same function as the paper's block on inputs of
odd sizes, put in place only where branches are narrow, and in the exported graph as fewer,
16-channel convolutions."""

import onnx
import pytest
import torch
from detectron2.modeling import build_model
from torch import nn

from srn_d2.deploy.export import deployment_metadata, export_onnx, verify_network
from srn_d2.deploy.merged_rfe import MergedRFE, merge_narrow_rfe
from srn_d2.modeling.rfe import RFE
from srn_testing import random_image, srn_cfg


def _random_rfe(channels, branch_channels, seed):
    torch.manual_seed(seed)
    rfe = RFE(channels, branch_channels).eval()
    with torch.no_grad():
        for conv in rfe.modules():
            if isinstance(conv, nn.Conv2d):
                conv.weight.normal_(0.0, conv.weight[0].numel() ** -0.5)
                conv.bias.normal_(0.0, 0.5)  # the merged blocks must keep each its own
    return rfe


@pytest.mark.parametrize("channels, branch_channels", [(16, 4), (8, 2), (12, 3), (256, 64)])
@pytest.mark.parametrize("shape", [(2, 7, 13), (1, 1, 1), (1, 5, 3), (1, 2, 9)])
def test_the_merged_rfe_is_the_same_function(channels, branch_channels, shape):
    rfe = _random_rfe(channels, branch_channels, seed=channels + shape[1])
    batch, height, width = shape
    x = torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, got = rfe(x), MergedRFE(rfe)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # Not trivially so: the branches (not only the residual) give most of the output.
    assert (expected - x).abs().mean() > 0.1 * x.abs().mean()


def test_the_merged_rfe_has_four_convolutions_of_all_branch_channels_before_the_fuse():
    merged = MergedRFE(_random_rfe(16, 4, seed=0))
    assert [
        tuple(c.weight.shape) for c in (merged.reduce, merged.wide, merged.tall, merged.mix)
    ] == [
        (16, 16, 1, 1),
        (16, 16, 1, 5),
        (16, 16, 5, 1),
        (16, 16, 1, 1),
    ]
    # The 1x3 branch sits centred in the 1x5 kernel: its outer columns are zero.
    third = slice(8, 12)
    assert merged.wide.weight[third, third][..., [0, 4]].abs().sum() == 0
    assert merged.wide.weight[third, third][..., 1:4].abs().sum() > 0
    # Nothing crosses from one branch to another.
    assert merged.mix.weight[0:4, 4:16].abs().sum() == 0


def test_a_branch_that_is_not_1xk_or_kx1_is_refused():
    rfe = _random_rfe(16, 4, seed=0)
    rfe.branches[1][2] = nn.Conv2d(4, 4, 3, padding=1)
    with pytest.raises(ValueError, match=r"1xk or kx1 .* kernels \[\(1, 5\), \(3, 3\)"):
        MergedRFE(rfe)


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


def test_only_narrow_branches_are_merged_and_the_model_itself_is_left_alone():
    smallest = build_model(srn_cfg("SRN_MobileNetV3Small_widerface.yaml")).eval()
    merged = merge_narrow_rfe(smallest)
    # The classification and the regression tower, shared by every level.
    assert _count(smallest, RFE) == 2 and _count(smallest, MergedRFE) == 0
    assert _count(merged, RFE) == 0 and _count(merged, MergedRFE) == 2
    # MobileNetV3-Large's SRN (8-channel branches) and SRN R-50 (64) are exported as they are.
    for config in ("SRN_MobileNetV3_widerface.yaml", "SRN_mini.yaml"):
        model = build_model(srn_cfg(config)).eval()
        assert merge_narrow_rfe(model) is model


def _convolutions(path):
    graph = onnx.load(path).graph
    weights = {w.name: tuple(w.dims) for w in graph.initializer}
    return [weights[n.input[1]] for n in graph.node if n.op_type == "Conv"]


def _exported_smallest_srn(tmp_path):
    """The smallest SRN with random weights, and its ONNX export (for any size) in ``tmp_path``."""
    cfg = srn_cfg("SRN_MobileNetV3Small_widerface.yaml")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    path = str(tmp_path / "model.onnx")
    export_onnx(model, (random_image(61, 83),), path, deployment_metadata(cfg))
    return model, path


@pytest.mark.slow
def test_the_smallest_srn_exports_its_rfe_as_16_channel_convolutions(tmp_path):
    model, path = _exported_smallest_srn(tmp_path)
    convolutions = _convolutions(path)
    # Twelve branch convolutions of 4 channels become four of 16 in each of the 18 RFE passes
    # (three tower passes, the two classification steps and the regression, on six levels).
    assert not [w for w in convolutions if w[1] == 4]
    assert sum(w in ((16, 16, 1, 5), (16, 16, 5, 1)) for w in convolutions) == 2 * 18
    # The exported network (every head map, before any threshold) is the model's own.
    report = verify_network(
        model, "onnx", (random_image(97, 131, seed=1), random_image(61, 203, seed=2))
    )
    assert report["outputs"] > 0 and report["relative_diff"] <= 1e-5


@pytest.mark.slow
def test_the_merged_convolutions_are_quantized_in_the_int8_twin(tmp_path):
    import numpy as np

    from srn_d2.deploy.onnx_runtime import ONNXFaceDetector
    from srn_d2.deploy.quantize import int8_path, quantize_int8

    model, path = _exported_smallest_srn(tmp_path)
    rng = np.random.default_rng(0)
    quantize_int8(path, [rng.uniform(0, 255, (3, 61, 83)).astype(np.float32) for _ in range(2)])
    graph = onnx.load(int8_path(path)).graph
    int8_weights = [
        tuple(w.dims) for w in graph.initializer if w.data_type == onnx.TensorProto.INT8
    ]
    # The wide and the tall convolution of each of the two merged blocks, stored once.
    assert sorted(w for w in int8_weights if w in ((16, 16, 1, 5), (16, 16, 5, 1))) == [
        (16, 16, 1, 5),
        (16, 16, 1, 5),
        (16, 16, 5, 1),
        (16, 16, 5, 1),
    ]
    boxes, scores = ONNXFaceDetector(int8_path(path), num_threads=1)(
        np.zeros((61, 83, 3), np.uint8)
    )
    assert boxes.shape == (len(scores), 4)
