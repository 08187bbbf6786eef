"""Training and evaluation entry points built on Detectron2's DefaultTrainer."""
from .trainer import SRNTrainer, build_evaluator, setup_cfg

__all__ = ["SRNTrainer", "build_evaluator", "setup_cfg"]
