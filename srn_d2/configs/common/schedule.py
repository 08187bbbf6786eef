"""Learning-rate multipliers: linear warm-up, then steps of 0.1, as SOLVER.STEPS / WARMUP_ITERS say."""

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler


def multi_step(max_iter: int, steps, warmup_iters: int):
    """The YAML configs' WarmupMultiStepLR as a LazyConfig node."""
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[0.1**k for k in range(len(steps) + 1)],
            milestones=list(steps),
            num_updates=max_iter,
        ),
        warmup_length=warmup_iters / max_iter,
        warmup_method="linear",
        warmup_factor=0.001,
    )
