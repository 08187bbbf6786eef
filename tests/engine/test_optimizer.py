"""SOLVER.OPTIMIZER: Detectron2's SGD, or AdamW with the same parameter groups and clipping."""

import pytest
import torch
from detectron2.solver import build_optimizer

from srn_d2.engine import SRNTrainer
from srn_testing import build_tiny_srn, tiny_srn_cfg


def _cfg(optimizer, clip=False):
    cfg = tiny_srn_cfg()
    cfg.SOLVER.OPTIMIZER = optimizer
    cfg.SOLVER.BASE_LR = 0.003
    cfg.SOLVER.WEIGHT_DECAY = 0.01
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = clip
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1e-9
    return cfg


def _group_settings(optimizer):
    return [(len(g["params"]), g["lr"], g["weight_decay"]) for g in optimizer.param_groups]


def test_sgd_is_detectron2s_optimizer():
    cfg = _cfg("SGD")
    model = build_tiny_srn(cfg)
    ours, detectron2s = SRNTrainer.build_optimizer(cfg, model), build_optimizer(cfg, model)
    assert type(ours) is type(detectron2s) is torch.optim.SGD
    assert _group_settings(ours) == _group_settings(detectron2s)


def test_adamw_keeps_detectron2s_parameter_groups():
    cfg = _cfg("AdamW")
    model = build_tiny_srn(cfg)
    adamw = SRNTrainer.build_optimizer(cfg, model)
    assert type(adamw) is torch.optim.AdamW
    assert _group_settings(adamw) == _group_settings(build_optimizer(_cfg("SGD"), model))
    # GroupNorm weights and biases are exempt from weight decay (WEIGHT_DECAY_NORM 0), convolutions are not.
    decays = {id(p): g["weight_decay"] for g in adamw.param_groups for p in g["params"]}
    assert decays[id(model.head.shared.cls_score.weight)] == 0.01
    norm = next(m for m in model.modules() if isinstance(m, torch.nn.GroupNorm))
    assert decays[id(norm.weight)] == 0.0


@pytest.mark.parametrize("clip", [False, True])
def test_adamw_step_equals_torchs_adamw(clip):
    cfg = _cfg("AdamW", clip=clip)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    reference = torch.nn.Linear(3, 2)
    reference.load_state_dict(model.state_dict())
    initial = model.weight.detach().clone()
    optimizer = SRNTrainer.build_optimizer(cfg, model)
    reference_optimizer = torch.optim.AdamW(reference.parameters(), lr=0.003, weight_decay=0.01)
    x = torch.randn(5, 3)
    for _ in range(3):
        for net, opt in ((model, optimizer), (reference, reference_optimizer)):
            opt.zero_grad()
            net(x).square().sum().backward()
            if clip and net is reference:
                torch.nn.utils.clip_grad_value_(net.parameters(), 1e-9)
            opt.step()
    assert torch.allclose(model.weight, reference.weight, rtol=0, atol=1e-7)
    assert torch.allclose(model.bias, reference.bias, rtol=0, atol=1e-7)
    assert not torch.allclose(model.weight, initial, rtol=0, atol=1e-4)


def test_unknown_optimizer_is_an_error_naming_the_key():
    cfg = _cfg("Adam")
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER = 'Adam'"):
        SRNTrainer.build_optimizer(cfg, build_tiny_srn(cfg))
