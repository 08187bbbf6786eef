"""Training, evaluation and prediction on Detectron2's engine, and config setup for every tool."""

from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
from .config_files import load_config_file, merge_config_file
from .defaults import FacePredictor, setup_cfg
from .trainer import SRNTrainer

__all__ = ["SRNTrainer", "FacePredictor", "setup_cfg", "load_config_file", "merge_config_file"]
