"""The one way srn_d2's tools turn a config file and overrides into a config, and the
predictor they run: Detectron2's ``engine/defaults.py`` for srn_d2."""

import logging
from typing import List, Sequence, Tuple

import numpy as np
import torch
from detectron2.engine import DefaultPredictor, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import load_inference_weights
from ..config import get_srn_cfg
from ..errors import ConfigValueError, require
from ..modeling import SRNWithTTA
from ..utils.file_io import check_run_folder
from ..utils.image_checks import check_bgr_image, check_test_size
from .config_files import merge_config_file

__all__ = [
    "setup_cfg",
    "resolve_command_device",
    "resolve_device",
    "split_overrides",
    "FacePredictor",
]

logger = logging.getLogger(__name__)


def setup_cfg(config_file: str, opts: Sequence[str] = (), args=None, run_setup: bool = True):
    """A frozen config: Detectron2's defaults, srn_d2's keys, ``config_file``, then ``opts``.

    The file is read by :func:`merge_config_file` (no code runs). MODEL.DEVICE
    goes through :func:`resolve_device`. With
    ``args`` (a command line's), the device is checked for training on ``--num-gpus``
    and, unless ``run_setup`` is False, Detectron2's ``default_setup`` also runs:
    output folder, logs, seed; srn_d2's own log goes beside Detectron2's.
    """
    cfg = get_srn_cfg()
    merge_config_file(cfg, config_file)
    opts = list(opts)
    options = [key for key in opts[::2] if key.startswith("--")]
    if options:
        # argparse hands everything after the first KEY VALUE pair to the overrides.
        raise ConfigValueError(
            f"option {options[0]} comes after the config overrides (KEY VALUE pairs), where it "
            "would be read as a config key; put the options first"
        )
    if len(opts) % 2:
        raise ConfigValueError(
            f"config overrides come as KEY VALUE pairs; {opts[-1]!r} has no value"
        )
    try:
        cfg.merge_from_list(opts)
    # yacs reports an unknown key as an AssertionError, a bad value as ValueError or KeyError.
    except (AssertionError, KeyError, ValueError) as error:
        raise ConfigValueError(
            f"config override: {error.args[0] if error.args else error}"
        ) from None
    cfg.MODEL.DEVICE = resolve_command_device(cfg.MODEL.DEVICE, "MODEL.DEVICE", args)
    cfg.freeze()
    if args is not None and run_setup:
        # Checked now, not at the first checkpoint an hour into training.
        check_run_folder(cfg.OUTPUT_DIR)
        default_setup(cfg, args)
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="srn_d2").setLevel(
            logging.INFO
        )
    return cfg


def resolve_command_device(device: str, key: str, args=None) -> str:
    """:func:`resolve_device` for a command line's ``args`` (None: no command line): it trains
    unless ``--eval-only``, on ``--num-gpus`` processes."""
    training = args is not None and not getattr(args, "eval_only", False)
    return resolve_device(device, key, training=training, num_gpus=getattr(args, "num_gpus", 1))


def resolve_device(device: str, key: str, training: bool = False, num_gpus: int = 1) -> str:
    """The device to run on, or a ConfigValueError naming ``key`` and the cause.

    CUDA asked for where torch has none: training stops, since a run planned for GPUs would
    crawl on the CPU for days; anything else (evaluating, exporting, a demo) goes on on the
    CPU with a warning, since its results do not depend on the device. A CPU device with
    ``num_gpus`` > 1 on a machine with CUDA is refused: Detectron2's ``launch`` then joins the
    processes over NCCL, which takes only CUDA tensors (on a machine without CUDA it uses
    GLOO, and CPU processes train).
    """
    wants_cuda = device.startswith("cuda")
    if wants_cuda and not torch.cuda.is_available():
        if torch.version.cuda is None:
            cause = f"this torch ({torch.__version__}) is a CPU-only build"
        else:
            cause = (
                f"this torch ({torch.__version__}) is built for CUDA {torch.version.cuda} but finds no GPU it "
                "can use (none, or a driver older than that CUDA: nvidia-smi shows the driver's CUDA version)"
            )
        if training:
            raise ConfigValueError(
                f"{key} = {device!r}: {cause}. Install a torch build that matches the driver (make install "
                "TORCH_INDEX_URL=https://download.pytorch.org/whl/cuXYZ, see docs/GETTING_STARTED.md, Install), "
                f"or set {key} cpu to train on the CPU"
            )
        logger.warning(f"{key} = {device!r} but {cause}: running on the CPU")
        return "cpu"
    if not wants_cuda and num_gpus > 1 and torch.cuda.is_available():
        raise ConfigValueError(
            f"{key} = {device!r} with --num-gpus {num_gpus}: on a machine with CUDA, Detectron2's launch joins the "
            f"processes over NCCL, which takes CUDA tensors only; set {key} cuda to train on {num_gpus} GPUs"
        )
    return device


def split_overrides(entry: str, key: str) -> Tuple[str, List[str]]:
    """A command-line ``"NAME[:KEY=VALUE,...]"`` entry -> (NAME, [KEY, VALUE, ...]) for :func:`setup_cfg`;
    an override without "=" is a ConfigValueError naming the option ``key``."""
    name, _, overrides = entry.partition(":")
    opts = [part for pair in overrides.split(",") if pair for part in pair.split("=", 1)]
    require(len(opts) % 2 == 0, key, entry, "overrides come as KEY=VALUE pairs after the name")
    return name, opts


class FacePredictor(DefaultPredictor):
    """Detectron2's DefaultPredictor (a BGR image in, ``{"instances": ...}`` out), with
    weights loaded by :func:`load_inference_weights` and, when TEST.AUG.ENABLED,
    SRN's multi-scale test."""

    def __init__(self, cfg, allow_random_weights: bool = False):
        # DefaultPredictor would load MODEL.WEIGHTS with Detectron2's checkpointer,
        # which unpickles code; it builds the model alone here.
        without_weights = cfg.clone()
        without_weights.defrost()
        without_weights.MODEL.WEIGHTS = ""
        super().__init__(without_weights)
        self.cfg = cfg.clone()
        load_inference_weights(self.model, cfg.MODEL.WEIGHTS, allow_random=allow_random_weights)
        if cfg.TEST.AUG.ENABLED:
            self.model = SRNWithTTA(cfg, self.model)

    def __call__(self, original_image: np.ndarray):
        """As :meth:`DefaultPredictor.__call__`, with the image checked as the ONNX runtime checks it
        (its kind, and the size the network would run on)."""
        height, width = check_bgr_image(original_image).shape[:2]
        check_test_size(height, width, self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MAX_SIZE_TEST)
        return super().__call__(original_image)
