"""Detectron2's DefaultTrainer with srn_d2's data pipeline, evaluators and TTA.

The same trainer runs SRN and stock Detectron2 models (RetinaNet), so a
comparison between them differs in the model alone.
"""

import logging
import os
import weakref

import torch
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.engine import (
    AMPTrainer,
    DefaultTrainer,
    SimpleTrainer,
    TrainerBase,
    create_ddp_model,
)
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import SafeCheckpointer
from ..errors import require
from ..data import SRNDatasetMapper
from ..evaluation.build import build_evaluator
from ..modeling import SRNWithTTA
from .determinism import enable_deterministic_training
from .ema import insert_weight_average

logger = logging.getLogger(__name__)


class SRNTrainer(DefaultTrainer):
    """DefaultTrainer with the SRN dataset mapper, face evaluators and SRN's TTA.

    Its construction is DefaultTrainer's with two differences, which
    DefaultTrainer offers no hook for:

    * weights and checkpoints load through :class:`SafeCheckpointer` (no code
      from a pickle runs; a damaged last checkpoint falls back to the one before);
    * on the CPU, DistributedDataParallel gets no GPU ``device_ids`` (which it
      refuses for CPU models), so ``--num-gpus N`` trains in N GLOO processes.
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        if cfg.MODEL.DEVICE == "cpu":
            # Focal-loss gradients of easy negatives underflow to denormals, which
            # slow CPU arithmetic several-fold (SRN_mini: 16 s -> 3 s per iteration).
            torch.set_flush_denormal(True)
            # Detectron2's AMPTrainer casts with torch.cuda.amp and asserts CUDA at its first step.
            require(
                not cfg.SOLVER.AMP.ENABLED,
                "SOLVER.AMP.ENABLED",
                True,
                "Detectron2's AMPTrainer needs CUDA; on the CPU, train in float32",
            )
        model = self.build_model(cfg)
        if cfg.DETERMINISTIC:
            enable_deterministic_training(
                model, cfg.MODEL.DEVICE, "MODEL.SRN.FUSE_UPSAMPLE", cfg.CUDNN_BENCHMARK
            )
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        ddp_options = {"device_ids": None} if cfg.MODEL.DEVICE == "cpu" else {}
        model = create_ddp_model(model, broadcast_buffers=False, **ddp_options)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SafeCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        """DefaultTrainer's hooks, and with ``MODEL_EMA.ENABLED`` the weights' moving average
        (:class:`srn_d2.engine.ema.WeightAverageHook`) right after the LR scheduler: it hands the averaged
        weights to the model before PreciseBN, the final checkpoint and the final evaluation.
        """
        ret = super().build_hooks()
        if self.cfg.MODEL_EMA.ENABLED:
            insert_weight_average(ret, self.model, self.checkpointer, self.cfg.MODEL_EMA.DECAY)
        return ret

    @classmethod
    def build_optimizer(cls, cfg, model):
        """Detectron2's SGD, or AdamW with the same parameter groups and gradient clipping."""
        name = cfg.SOLVER.OPTIMIZER
        require(name in ("SGD", "AdamW"), "SOLVER.OPTIMIZER", name, 'one of "SGD", "AdamW"')
        if name == "SGD":
            return super().build_optimizer(cfg, model)
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
            params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY
        )

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=SRNDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=SRNDatasetMapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Evaluate with the authors' multi-scale test; results keys end in "_TTA"."""
        logger.info("Running inference with SRN's test-time augmentation ...")
        tta_model = SRNWithTTA(cfg, model)
        evaluators = [
            cls.build_evaluator(
                cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name)
            )
            for name in cfg.DATASETS.TEST
        ]
        results = cls.test(cfg, tta_model, evaluators)
        return {k + "_TTA": v for k, v in results.items()}
