"""The one way srn_d2's tools turn a config file and overrides into a config."""
import logging
from typing import Sequence

import torch
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import get_srn_cfg, merge_config_file

logger = logging.getLogger(__name__)


def setup_cfg(config_file: str, opts: Sequence[str] = (), args=None):
    """A frozen config: Detectron2's defaults, srn_d2's keys, ``config_file``, then ``opts``.

    A CUDA device falls back to the CPU when no GPU is present (with a
    warning). With ``args`` (a command line's), Detectron2's ``default_setup``
    also runs: output folder, logs, seed; srn_d2's own log goes beside Detectron2's.
    """
    cfg = get_srn_cfg()
    merge_config_file(cfg, config_file)
    cfg.merge_from_list(list(opts))
    if not torch.cuda.is_available() and cfg.MODEL.DEVICE.startswith("cuda"):
        logger.warning("CUDA is not available: running on the CPU")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    if args is not None:
        default_setup(cfg, args)
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="srn_d2").setLevel(logging.INFO)
    return cfg

