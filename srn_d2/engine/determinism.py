"""Deterministic training (``DETERMINISTIC`` / ``train.deterministic``): a run that repeats bit for
bit with the same seed, on the CPU or a GPU, or a stop at start that names the key to change.

On a GPU, by default, some kernels add in whatever order their threads finish (atomics), so
two runs with the same seed drift apart; SRN's default top-down upsampling, bilinear (the
released model's), is one of them: its CUDA backward has no deterministic version, and
``torch.use_deterministic_algorithms(True)`` refuses it at the first backward.
"""

import logging
import os

import torch

from ..errors import require

__all__ = ["enable_deterministic_training"]

logger = logging.getLogger(__name__)


def enable_deterministic_training(
    model: torch.nn.Module, device: str, upsample_key: str, cudnn_benchmark: bool = False
) -> None:
    """Make training deterministic, or raise a ConfigValueError naming the key that prevents it.

    Args:
        model: the model to train (before DistributedDataParallel wraps it).
        device: where it trains.
        upsample_key: the key of SRN's top-down upsampling in this config path.
        cudnn_benchmark: CUDNN_BENCHMARK, which picks convolution algorithms by timing them.
    """
    on_cuda = torch.device(device).type == "cuda"
    bilinear = any(getattr(m, "upsample_mode", None) == "bilinear" for m in model.modules())
    require(
        not (on_cuda and bilinear),
        upsample_key,
        "bilinear",
        "has a CUDA backward that adds with atomics, which deterministic training refuses; "
        f"set {upsample_key} nearest (Detectron2's FPN's), or turn deterministic training off",
    )
    require(
        not cudnn_benchmark,
        "CUDNN_BENCHMARK",
        True,
        "picks convolution algorithms by timing them, which deterministic training cannot; set it False",
    )
    # cuBLAS needs a fixed workspace to be deterministic; it reads this when its first handle is made.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    logger.info("deterministic training: torch.use_deterministic_algorithms(True)")
