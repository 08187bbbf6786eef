"""Loading weights without running code they carry, and knowing what they left random.

Detectron2's :class:`DetectionCheckpointer` unpickles ``.pkl`` files with
:func:`pickle.load`, which runs any code a crafted file names. srn_d2 loads
every checkpoint through :class:`SafeCheckpointer`: ``.pkl`` files through an
unpickler that rebuilds only dicts and numpy arrays, everything else through
``torch.load(weights_only=True)``.
"""

from .utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import logging
import os
import pickle
import zipfile
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager
from torch import nn

from .errors import RandomWeightsError, UnreadableCheckpointError, UnsafeCheckpointError
from .utils.file_io import atomic_write

# Where checkpoints keep the weights' moving average (MODEL_EMA, srn_d2.engine.ema).
CHECKPOINT_EMA_KEY = "model_ema"

logger = logging.getLogger(__name__)

# What a weights pickle (Detectron2's model zoo, Caffe2 / Detectron1, srn_d2's old
# converter output) may name: containers and the numpy functions that rebuild arrays.
_SAFE_PICKLE_GLOBALS = frozenset(
    [
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    ]
    + [
        (f"{package}.{module}", name)
        for package in ("numpy.core", "numpy._core")
        for module, name in (
            ("multiarray", "_reconstruct"),
            ("multiarray", "scalar"),
            ("numeric", "_frombuffer"),
        )
    ]
)
# What a damaged or foreign file makes torch.load / pickle raise.
_UNREADABLE = (
    pickle.UnpicklingError,
    EOFError,
    zipfile.BadZipFile,
    RuntimeError,
    ValueError,
    IndexError,
    KeyError,
)


class _WeightsUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_PICKLE_GLOBALS:
            raise UnsafeCheckpointError(
                f"{self.source}: refusing to unpickle {module}.{name}: a weights file should hold "
                "only dicts and arrays, and this name could run code. Load only files you trust; "
                "convert trusted ones to .pth (torch.save of a dict of tensors)"
            )
        return super().find_class(module, name)


def load_weights_pickle(path: str) -> Any:
    """The content of a ``.pkl`` weights file, unpickled with only containers and numpy arrays allowed."""
    with PathManager.open(path, "rb") as f:
        return _WeightsUnpickler(f, path).load()


def _check_finite(weights: Any, filename: str) -> None:
    """UnreadableCheckpointError naming the first weight (tensor or array) that holds NaN or infinity."""
    if not isinstance(weights, dict):
        return
    for key, value in weights.items():
        if isinstance(value, torch.Tensor):
            finite = not value.is_floating_point() or bool(torch.isfinite(value).all())
        elif isinstance(value, np.ndarray):
            finite = value.dtype.kind != "f" or bool(np.isfinite(value).all())
        else:
            continue
        if not finite:
            raise UnreadableCheckpointError(
                f"checkpoint {filename}: {key} holds NaN or infinity; a model with it would detect nothing"
            )


class SafeCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that runs no code from the files it loads.

    * ``.pkl`` files are read by :func:`load_weights_pickle`; Detectron2's
      model-zoo and Caffe2 layouts are understood as by DetectionCheckpointer.
    * Other files go through ``torch.load(..., weights_only=True)``.
    * A missing, damaged or foreign file raises :class:`UnreadableCheckpointError`
      naming it; :meth:`resume_or_load` then falls back to the newest readable
      checkpoint of ``save_dir`` and says so.
    * Weights holding NaN or infinity are refused, naming the tensor: such a
      model silently detects nothing.
    * Resuming from a checkpoint of another model (keys or shapes differ) is
      refused, naming the key, before the optimizer state is loaded.
    * After :meth:`load`, :attr:`incompatible` holds the model keys the file
      did not set (see :func:`load_inference_weights`).
    * :meth:`save` writes each file beside its target and renames it into
      place (:func:`srn_d2.utils.file_io.atomic_write`): a full disk mid-save
      leaves the previous checkpoint and ``last_checkpoint`` as they were.
    """

    def __init__(self, model: nn.Module, save_dir: str = "", **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.incompatible = None
        self._resuming = False

    def load(self, path: str, *args, **kwargs) -> Dict[str, Any]:
        if path and "://" not in path and not os.path.isfile(path):
            raise UnreadableCheckpointError(
                f"checkpoint {path} not found (MODEL.WEIGHTS or the resumed file)"
            )
        try:
            return super().load(path, *args, **kwargs)
        finally:
            # DetectionCheckpointer.load leaves this set when loading fails, and then
            # refuses every later load; a fallback to another file needs it cleared.
            self._parsed_url_during_load = None

    def _load_file(self, filename: str) -> Dict[str, Any]:
        try:
            if filename.endswith(".pkl"):
                return self._model_zoo_layout(load_weights_pickle(filename), filename)
            return super()._load_file(filename)
        except UnsafeCheckpointError:
            raise
        except _UNREADABLE as error:
            raise UnreadableCheckpointError(
                f"checkpoint {filename} is damaged or not a checkpoint ({type(error).__name__}: {error})"
            ) from error

    def _torch_load(self, f: str) -> Dict[str, Any]:
        checkpoint = torch.load(f, map_location=torch.device("cpu"), weights_only=True)
        if not isinstance(checkpoint, dict):
            raise UnreadableCheckpointError(
                f"checkpoint {f} holds a {type(checkpoint).__name__}, not a dict"
            )
        _check_finite(checkpoint.get("model", checkpoint), f)
        if CHECKPOINT_EMA_KEY in checkpoint:
            average = checkpoint[CHECKPOINT_EMA_KEY]
            if not isinstance(average, dict) or not all(
                isinstance(v, torch.Tensor) for v in average.values()
            ):
                raise UnreadableCheckpointError(
                    f"checkpoint {f}: {CHECKPOINT_EMA_KEY} holds a "
                    f"{type(average).__name__}, not the weights' average"
                )
            _check_finite(average, f"{f} ({CHECKPOINT_EMA_KEY})")
        return checkpoint

    def save(self, name: str, **kwargs: Any) -> None:
        """As :meth:`fvcore.common.checkpoint.Checkpointer.save`, each file written atomically."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        with atomic_write(save_file, "wb") as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        with atomic_write(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(last_filename_basename)

    def _model_zoo_layout(self, data: Any, filename: str) -> Dict[str, Any]:
        """A ``.pkl`` content in the layout DetectionCheckpointer gives it."""
        if not isinstance(data, dict):
            raise UnreadableCheckpointError(
                f"checkpoint {filename} holds a {type(data).__name__}, not a dict"
            )
        if "model" in data and "__author__" in data:
            self.logger.info(f"Reading a file from '{data['__author__']}'")
            _check_finite(data["model"], filename)
            return data
        blobs = data.get("blobs", data)
        model = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
        _check_finite(model, filename)
        return {"model": model, "__author__": "Caffe2", "matching_heuristics": True}

    def _load_model(self, checkpoint):
        if self._resuming:
            self._check_same_model(checkpoint.get("model", {}))
            if CHECKPOINT_EMA_KEY in checkpoint and CHECKPOINT_EMA_KEY in self.checkpointables:
                # The average has the model's structure; another one would fail inside timm.
                self._check_same_model(checkpoint[CHECKPOINT_EMA_KEY], CHECKPOINT_EMA_KEY)
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible

    def _check_same_model(self, saved: Dict[str, Any], part: str = "") -> None:
        """ValueError naming the first key that differs between a resumed checkpoint and the model.

        Detectron2 loads what matches and warns about the rest; resuming then
        hands the optimizer state of another model to this one, which fails
        deep inside the optimizer at the first step. With ``part`` ("model_ema"),
        the checkpoint's copy of the model under that key: an UnreadableCheckpointError,
        so that resuming falls back to the checkpoint before.
        """
        own = self.model.state_dict()
        error = UnreadableCheckpointError if part else ValueError
        where_saved = f"its checkpoint's {part}" if part else "its checkpoint"
        for key in sorted(set(own) | set(saved)):
            if key not in saved or key not in own:
                where = "the model" if key in own else where_saved
                raise error(
                    f"resuming in {self.save_dir}: {where_saved} was written by another model ({key} is only in "
                    f"{where}); resume with the config that wrote it, or train into a new OUTPUT_DIR"
                )
            if tuple(saved[key].shape) != tuple(own[key].shape):
                raise error(
                    f"resuming in {self.save_dir}: {where_saved} was written by another model ({key} is "
                    f"{tuple(saved[key].shape)} there, {tuple(own[key].shape)} here); resume with the config "
                    "that wrote it, or train into a new OUTPUT_DIR"
                )

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        candidates = self._resume_candidates()
        if not candidates:
            raise UnreadableCheckpointError(
                f"{self.save_dir} holds no checkpoint file to resume from"
            )
        self._resuming = True
        try:
            for candidate, fallback in zip(candidates, candidates[1:] + [None]):
                try:
                    return self.load(candidate)
                except UnreadableCheckpointError as error:
                    if fallback is None:
                        raise UnreadableCheckpointError(
                            f"no readable checkpoint in {self.save_dir} to resume from (tried {candidates})"
                        ) from error
                    logger.warning(
                        f"{error}; resuming from the previous checkpoint {fallback} instead"
                    )
        finally:
            self._resuming = False

    def _resume_candidates(self) -> List[str]:
        """The last checkpoint, then the others of ``save_dir``, newest first; existing files only."""
        last = self.get_checkpoint_file()
        others = sorted(
            (
                f
                for f in self.get_all_checkpoint_files()
                if os.path.abspath(f) != os.path.abspath(last)
            ),
            key=os.path.getmtime,
            reverse=True,
        )
        if os.path.isfile(last):
            return [last] + others
        logger.warning(
            f"the last checkpoint {last} does not exist; trying the others of {self.save_dir}"
        )
        return others


def load_inference_weights(
    model: nn.Module, weights: Optional[str], *, allow_random: bool = False
) -> None:
    """Load ``weights`` (MODEL.WEIGHTS) into ``model`` for inference, safely.

    Raises :class:`RandomWeightsError` when ``weights`` is empty, or leaves some
    of the model's parameters unset (missing or of another shape), unless
    ``allow_random``: a detector with random weights still outputs boxes,
    which would be taken for results.
    """
    if not weights:
        if not allow_random:
            raise RandomWeightsError(
                "MODEL.WEIGHTS is empty: the model would run with random weights. Give a checkpoint "
                "(MODEL.WEIGHTS path/to/model.pth), or allow random weights explicitly"
            )
        logger.warning("MODEL.WEIGHTS is empty: running with random weights, as asked")
        return
    checkpointer = SafeCheckpointer(model)
    checkpointer.load(weights, checkpointables=[])
    incompatible = checkpointer.incompatible
    unset = list(incompatible.missing_keys) + [key for key, _, _ in incompatible.incorrect_shapes]
    if unset:
        message = (
            f"MODEL.WEIGHTS {weights} leaves {len(unset)} of the model's parameters random "
            f"(missing or of another shape), e.g. {unset[:5]}"
        )
        if not allow_random:
            raise RandomWeightsError(message + "; is it a checkpoint of this config's model?")
        logger.warning(message + ", as allowed")
