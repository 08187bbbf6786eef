"""SRN under mixed precision: the forward and losses under autocast (bfloat16 and float16 on the CPU)."""

import pytest
import torch
from detectron2.structures import Keypoints
from detectron2.utils.events import EventStorage

from srn_d2.modeling.box_regression import SingleBoxTransform
from srn_d2.modeling.srn_losses import box_loss, classification_loss
from srn_testing import build_tiny_srn, face_instances, random_image, srn_cfg, tiny_srn_cfg


def _batch():
    boxes = [[[10, 12, 30, 37], [40, 5, 125, 95]], [[60, 20, 70, 33], [2, 4, 90, 94]]]
    return [
        {"image": random_image(96, 128, seed=i), "instances": face_instances((96, 128), boxes[i])}
        for i in range(2)
    ]


def _cfg(checkpoint=""):
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.HEAD_ACTIVATION_CHECKPOINT = checkpoint
    # Untrained, every face probability sits at the 0.01 prior, exactly STC's threshold
    # (1 - 0.99), where bfloat16's rounding alone decides which anchors step 1 keeps.
    cfg.MODEL.SRN.STC_MIN_FACE_PROB = 0.005
    return cfg


def _float32_losses():
    model = build_tiny_srn(_cfg()).train()
    with EventStorage():
        return {k: v.item() for k, v in model(_batch()).items()}


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint", ["", "rfe", "towers"])
def test_bfloat16_training_gives_finite_falling_losses(checkpoint):
    cfg = _cfg(checkpoint)
    model = build_tiny_srn(cfg).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch, totals = _batch(), []
    with EventStorage():
        for step in range(20):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                losses = model(batch)
                # The head really runs in bfloat16 (its logits come out in it).
                assert model.head.shared.cls_score(torch.zeros(1, 32, 2, 2)).dtype == torch.bfloat16
            assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
            if step == 0:
                # The same weights in float32 give the same losses, to bfloat16's precision.
                for key, value in _float32_losses().items():
                    assert losses[key].item() == pytest.approx(value, rel=0.05, abs=1e-3), key
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            assert all(
                torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None
            )
            optimizer.step()
            totals.append(total.item())
    assert sum(totals[-3:]) < 0.7 * sum(totals[:3])


def test_head_checkpointing_changes_memory_not_results():
    """Recomputing the head in backward gives the gradients of keeping its activations."""
    grads = {}
    for checkpoint in ["", "rfe", "towers"]:
        cfg = tiny_srn_cfg()
        cfg.MODEL.SRN.HEAD_ACTIVATION_CHECKPOINT = checkpoint
        model = build_tiny_srn(cfg).train()
        with EventStorage():
            sum(model(_batch()).values()).backward()
        grads[checkpoint] = torch.cat(
            [p.grad.flatten() for p in model.parameters() if p.grad is not None]
        )
    assert torch.equal(grads[""], grads["rfe"]) and torch.equal(grads[""], grads["towers"])


def test_amp_on_the_cpu_is_a_clear_error(tmp_path, monkeypatch):
    from srn_d2.engine import SRNTrainer

    monkeypatch.setenv("SRN_DATASETS", str(tmp_path / "datasets"))
    cfg = srn_cfg("SRN_mini.yaml")
    cfg.merge_from_list(
        ["SOLVER.AMP.ENABLED", "True", "OUTPUT_DIR", str(tmp_path), "DATALOADER.NUM_WORKERS", "0"]
    )
    with pytest.raises(ValueError, match="SOLVER.AMP.ENABLED.*CUDA"):
        SRNTrainer(cfg)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("landmarks", [False, True], ids=["boxes", "landmarks"])
def test_losses_stay_float32_and_finite_under_autocast(dtype, landmarks):
    """CUDA's AMP runs float16; the CPU's autocast emulates both half types: every loss, summed over
    about 10^4 anchors, comes out float32 and finite, whatever the head computed in."""
    cfg = _cfg()
    cfg.MODEL.SRN.LANDMARKS.ENABLED = landmarks
    model = build_tiny_srn(cfg).train()
    batch = _batch()
    for item in batch:
        boxes = item["instances"].gt_boxes.tensor
        points = torch.stack(
            [boxes[:, :2] + (boxes[:, 2:] - boxes[:, :2]) * t for t in torch.linspace(0.2, 0.8, 5)],
            1,
        )
        item["instances"].gt_keypoints = Keypoints(
            torch.cat([points, torch.full((len(boxes), 5, 1), 2.0)], -1)
        )
    with EventStorage(), torch.autocast("cpu", dtype=dtype):
        losses = model(batch)
        assert model.head.shared.cls_score(torch.zeros(1, 32, 2, 2)).dtype == dtype
    assert len(losses) == 4 + landmarks
    assert all(v.dtype == torch.float32 and torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_loss_building_blocks_take_half_inputs_and_sum_in_float32():
    logits = torch.full((1, 3, 1), 60000.0, dtype=torch.float16)  # near float16's largest value
    labels = torch.tensor([[0, 1, -1]])
    total, positives = classification_loss(logits, labels, 1, 0.25, 2.0)
    assert total.dtype == torch.float32 and torch.isfinite(total) and int(positives) == 1
    anchors = torch.tensor([[[0.0, 0.0, 10.0, 10.0]] * 3])
    deltas = torch.zeros(1, 3, 4, dtype=torch.bfloat16)
    positive = torch.tensor([[True, False, False]])
    # An unmatched anchor's box is zeros: coded against itself it adds nothing, and no NaN.
    gt = torch.tensor([[[5.0, 0.0, 15.0, 10.0], [0.0] * 4, [0.0] * 4]])
    total, count = box_loss(
        deltas, anchors, gt, positive, SingleBoxTransform((1.0, 1.0, 1.0, 1.0)), 0.1
    )
    assert total.dtype == torch.float32 and total.item() == pytest.approx(0.45) and int(count) == 1
