"""An exponential moving average of the weights while training (``MODEL_EMA``).

A network trained from scratch for a few hundred steps ends wherever the last
noisy steps left it, and which seed ends well varies. Averaging the weights over
the last ``1 / (1 - MODEL_EMA.DECAY)`` iterations evaluates the average instead.
The average is timm's :class:`~timm.utils.ModelEmaV3`; this hook decides when it
starts, what it is saved with, and when the model takes its weights:

* it starts from the weights after the first iteration trained (not the random
  initialization, which would otherwise keep ``DECAY ** MAX_ITER`` of the weight),
  or from the checkpoint's average when training resumes;
* checkpoints carry it under ``"model_ema"``, so a resumed run averages on;
* after the last iteration the model takes the averaged weights, before the
  hooks that follow it (PreciseBN, PeriodicCheckpointer, EvalHook) run: the
  final checkpoint's ``"model"``, the final evaluation and every predictor loading
  ``model_final.pth`` see the average. Evaluations during training
  (``TEST.EVAL_PERIOD``) score the weights being trained.
"""

import logging
from typing import Dict, List, Optional

import torch
from detectron2.engine import HookBase, hooks
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import CHECKPOINT_EMA_KEY as CHECKPOINT_KEY
from ..errors import require

logger = logging.getLogger(__name__)


class WeightAverageHook(HookBase):
    """Keeps the moving average of a trainer's weights and hands it to the model at the end.

    Its :attr:`checkpointable` (``state_dict`` / ``load_state_dict``) goes to the trainer's
    checkpointer under :data:`CHECKPOINT_KEY` before the checkpointer loads, so resuming
    restores the average. The hook itself has no state_dict: Detectron2's trainer saves every
    hook's into its own entry, which would store the average twice and restore it from a copy
    that no check reads.
    """

    def __init__(self, model: torch.nn.Module, decay: float, decay_key: str = "MODEL_EMA.DECAY"):
        require(
            isinstance(decay, (int, float)) and 0.0 <= decay < 1.0,
            decay_key,
            decay,
            "needs 0 <= decay < 1 (the weight of the average so far at each iteration)",
        )
        self._model = model.module if isinstance(model, DistributedDataParallel) else model
        self.decay = float(decay)
        self.average = ModelEmaV3(self._model, decay=self.decay)
        self.started = False

    def average_state(self) -> Dict[str, torch.Tensor]:
        return self.average.module.state_dict()

    def load_average(self, state: Dict[str, torch.Tensor]) -> None:
        self.average.module.load_state_dict(state)
        self.started = True

    @property
    def checkpointable(self) -> "_SavedAverage":
        return _SavedAverage(self)

    def before_train(self):
        if self.trainer.start_iter > 0 and not self.started:
            logger.warning(
                "the resumed checkpoint holds no %s: the weights' moving average starts again from "
                "the weights after the next iteration",
                CHECKPOINT_KEY,
            )

    def after_step(self):
        if self.started:
            self.average.update(self._model)
        else:
            self.average.set(self._model)
            self.started = True
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self._model.load_state_dict(self.average.module.state_dict())
            logger.info("The model takes its weights' moving average (decay %s)", self.decay)


class _SavedAverage:
    """The average as the checkpointer saves and loads it."""

    def __init__(self, hook: WeightAverageHook):
        self.hook = hook

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.hook.average_state()

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        self.hook.load_average(state)


def insert_weight_average(
    trainer_hooks: List[Optional[HookBase]],
    model: torch.nn.Module,
    checkpointer,
    decay: float,
    decay_key: str = "MODEL_EMA.DECAY",
) -> None:
    """Put a :class:`WeightAverageHook` into ``trainer_hooks`` right after the LR scheduler and
    register it with ``checkpointer`` (call before the checkpointer loads)."""
    average = WeightAverageHook(model, decay, decay_key)
    checkpointer.add_checkpointable(CHECKPOINT_KEY, average.checkpointable)
    after_scheduler = (
        next(i for i, h in enumerate(trainer_hooks) if isinstance(h, hooks.LRScheduler)) + 1
    )
    trainer_hooks.insert(after_scheduler, average)
