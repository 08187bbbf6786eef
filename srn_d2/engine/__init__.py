"""Training and evaluation on Detectron2's DefaultTrainer, and config setup for every tool."""
from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
from .defaults import setup_cfg
from .trainer import SRNTrainer

__all__ = ["SRNTrainer", "setup_cfg"]
