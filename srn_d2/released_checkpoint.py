"""Converting the authors' released SRN checkpoint to a Detectron2 checkpoint
(the library behind ``python -m srn_d2.tools.convert_released``).

The released file (github.com/ChiCheng123/SRN, ``srn/model/resnet_srn.py``) is
a state dict of a torchvision-style ResNet-50 (``conv1``, ``bn1``,
``layer1``-``layer4``) with C6 / C7 as ``layer5`` / ``layer6``, the neck convs
(``c*_conv``, ``c*_lateral``, ``p*_conv``), and the head: ``cls_subnet`` /
``box_subnet`` = Sequential(conv3x3, ReLU, RFE, conv3x3, ReLU), whose RFE holds
``branch0``-``branch3`` (1x5, 5x1, 1x3, 3x1, each Sequential(conv1x1, ReLU,
conv, ReLU, conv1x1, ReLU)) and ``cated_conv`` = Sequential(conv1x1, ReLU), and
the 1x1 predictors ``cls_subnet_pred`` / ``box_subnet_pred``. It may sit under
a ``state_dict`` entry with a ``module.`` prefix (a DataParallel save).

The output is keyed by the parameter names of the model that
``configs/SRN_R_50_official.yaml`` builds; every key and shape is checked
against that model before anything is written. It is a ``.pth`` file of
tensors, which loads with ``torch.load(weights_only=True)``: no code runs when
anyone loads it (a ``.pkl`` would be unpickled by Detectron2, which can).
"""

from .utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import logging
import os
import pickle
import re
import zipfile
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
from detectron2.modeling import build_model
from torch import nn

from . import model_zoo
from .engine import setup_cfg
from .errors import InputError
from .utils.file_io import atomic_write, check_output_path

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = model_zoo.get_config_file("SRN_R_50_official.yaml")
AUTHOR = "ChiCheng123/SRN released model, converted by srn_d2.tools.convert_released"

_BN_FIELD = r"(weight|bias|running_mean|running_var)"
_TOWERS = {"cls": "cls_subnet", "box": "bbox_subnet"}

# (released name pattern, Detectron2 name), tried in order with re.fullmatch.
_RULES: List[Tuple[str, Callable[[re.Match], str]]] = [
    (r"conv1\.weight", lambda m: "backbone.bottom_up.stem.conv1.weight"),
    (rf"bn1\.{_BN_FIELD}", lambda m: f"backbone.bottom_up.stem.conv1.norm.{m[1]}"),
    (
        r"layer([1-4])\.(\d+)\.conv([1-3])\.weight",
        lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight",
    ),
    (
        rf"layer([1-4])\.(\d+)\.bn([1-3])\.{_BN_FIELD}",
        lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}",
    ),
    (
        r"layer([1-4])\.(\d+)\.downsample\.0\.weight",
        lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.shortcut.weight",
    ),
    (
        rf"layer([1-4])\.(\d+)\.downsample\.1\.{_BN_FIELD}",
        lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}",
    ),
    (r"layer5\.(weight|bias)", lambda m: f"backbone.c6.{m[1]}"),
    (r"layer6\.(weight|bias)", lambda m: f"backbone.c7.{m[1]}"),
    (
        r"(c[2-7]_conv|c[2-5]_lateral|p[2-7]_conv)\.(weight|bias)",
        lambda m: f"backbone.{m[1]}.{m[2]}",
    ),
    (
        r"(cls|box)_subnet\.(\d+)\.(weight|bias)",
        lambda m: f"head.shared.{_TOWERS[m[1]]}.{m[2]}.{m[3]}",
    ),
    # Released RFE branches 0-3 are 1x5, 5x1, 1x3, 3x1: the order of srn_d2's RFE.branches.
    (
        r"(cls|box)_subnet\.(\d+)\.branch(\d)\.(\d+)\.(weight|bias)",
        lambda m: f"head.shared.{_TOWERS[m[1]]}.{m[2]}.branches.{m[3]}.{m[4]}.{m[5]}",
    ),
    (
        r"(cls|box)_subnet\.(\d+)\.cated_conv\.(\d+)\.(weight|bias)",
        lambda m: f"head.shared.{_TOWERS[m[1]]}.{m[2]}.fuse.{m[3]}.{m[4]}",
    ),
    (r"cls_subnet_pred\.(weight|bias)", lambda m: f"head.shared.cls_score.{m[1]}"),
    (r"box_subnet_pred\.(weight|bias)", lambda m: f"head.shared.bbox_pred.{m[1]}"),
]
_COMPILED = [(re.compile(pattern), rename) for pattern, rename in _RULES]
# torchvision >= 0.4 BatchNorm counters; FrozenBatchNorm2d keeps none.
_IGNORED = re.compile(r"(.*\.)?num_batches_tracked")


class ConversionError(InputError):
    """The checkpoint does not fit the released layout or the target model."""


def released_to_d2_name(name: str) -> Optional[str]:
    """The Detectron2 name of released parameter ``name``, or None when no rule applies."""
    for pattern, rename in _COMPILED:
        match = pattern.fullmatch(name)
        if match:
            return rename(match)
    return None


def load_released(path: str, trust_pickle: bool = False) -> Dict[str, torch.Tensor]:
    """The released state dict of ``path``, without a ``state_dict`` wrapper or ``module.`` prefix."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        raise ConversionError(
            f"{path}: not loadable as plain tensors ({e}); if the file is trusted, pass --trust-pickle"
        ) from e
    except (EOFError, IndexError, RuntimeError, ValueError, zipfile.BadZipFile) as e:
        raise ConversionError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f"{path}: expected a state dict, found {type(checkpoint).__name__}")
    state_dict = {}
    for key, value in checkpoint.items():
        if not torch.is_tensor(value):
            raise ConversionError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        state_dict[key[len("module.") :] if key.startswith("module.") else key] = value
    return state_dict


def convert_state_dict(
    released: Mapping[str, torch.Tensor],
) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Rename the released parameters.

    Returns:
        the renamed state dict, and for each new name the released name it came from.
    Raises:
        ConversionError naming every released key that no rule covers.
    """
    converted, source = {}, {}
    unknown = []
    for name, value in released.items():
        if _IGNORED.fullmatch(name):
            continue
        new_name = released_to_d2_name(name)
        if new_name is None:
            unknown.append(name)
            continue
        converted[new_name] = value
        source[new_name] = name
    if unknown:
        raise ConversionError(f"released keys not in the SRN layout: {sorted(unknown)}")
    return converted, source


def check_against_model(
    converted: Mapping[str, torch.Tensor], source: Mapping[str, str], model: nn.Module
) -> None:
    """Raise ConversionError unless ``converted`` has exactly ``model``'s keys and shapes."""
    expected = model.state_dict()
    problems = []
    missing = sorted(set(expected) - set(converted))
    if missing:
        problems.append(f"missing from the checkpoint (model keys): {missing}")
    unexpected = sorted(set(converted) - set(expected))
    if unexpected:
        problems.append("not in the model: " + ", ".join(f"{source[k]} -> {k}" for k in unexpected))
    for key in sorted(set(converted) & set(expected)):
        if converted[key].shape != expected[key].shape:
            problems.append(
                f"shape of {source[key]} {tuple(converted[key].shape)} != "
                f"{key} {tuple(expected[key].shape)}"
            )
    if problems:
        raise ConversionError("; ".join(problems))


def build_target_model(config_file: str) -> nn.Module:
    """The model of ``config_file`` on the CPU, to check the converted keys against."""
    return build_model(setup_cfg(config_file, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""]))


def _check_output_path(path: str, in_path: Optional[str] = None) -> None:
    if not path.endswith(".pth"):
        raise ConversionError(
            f"{path}: the output must end in .pth (Detectron2 unpickles .pkl files, which can run code)"
        )
    if (
        in_path is not None
        and os.path.exists(path)
        and os.path.exists(in_path)
        and os.path.samefile(path, in_path)
    ):
        raise ConversionError(
            f"{path}: is the input {in_path}; writing it would destroy the released checkpoint"
        )
    check_output_path(path)


def check_finite(state_dict: Mapping[str, torch.Tensor], source: Mapping[str, str]) -> None:
    """ConversionError naming every tensor that holds NaN or an infinity: such weights make
    a model that silently detects nothing."""
    bad = [
        source.get(k, k)
        for k, v in state_dict.items()
        if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise ConversionError(f"non-finite values (NaN or infinity) in {bad}")


def save_checkpoint(state_dict: Mapping[str, torch.Tensor], path: str) -> None:
    """Write a Detectron2 checkpoint of tensors (.pth), loadable with ``weights_only=True``."""
    _check_output_path(path)
    model = {k: v.detach().cpu() for k, v in state_dict.items()}
    with atomic_write(path, "wb") as f:
        torch.save({"model": model, "__author__": AUTHOR, "matching_heuristics": False}, f)


def convert(
    in_path: str, out_path: str, model: nn.Module, trust_pickle: bool = False
) -> Dict[str, torch.Tensor]:
    """Convert ``in_path`` to ``out_path``, checked against ``model``; returns the converted state dict."""
    _check_output_path(out_path, in_path)
    released = load_released(in_path, trust_pickle)
    converted, source = convert_state_dict(released)
    try:
        check_finite(converted, source)
        check_against_model(converted, source, model)
    except ConversionError as e:
        raise ConversionError(f"{in_path}: {e}") from None
    save_checkpoint(converted, out_path)
    return converted
