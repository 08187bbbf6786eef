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

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager
from torch import nn

from .errors import UnreadableCheckpointError, UnsafeCheckpointError

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
        for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
    ]
)
# What a damaged or foreign file makes torch.load / pickle raise.
_UNREADABLE = (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, RuntimeError, ValueError, IndexError, KeyError)


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


class SafeCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that runs no code from the files it loads.

    * ``.pkl`` files are read by :func:`load_weights_pickle`; Detectron2's
      model-zoo and Caffe2 layouts are understood as by DetectionCheckpointer.
    * Other files go through ``torch.load(..., weights_only=True)``.
    * A missing, damaged or foreign file raises :class:`UnreadableCheckpointError`
      naming it; :meth:`resume_or_load` then falls back to the newest readable
      checkpoint of ``save_dir`` and says so.
    * After :meth:`load`, :attr:`incompatible` holds the model keys the file
      did not set (see :func:`load_inference_weights`).
    """

    def __init__(self, model: nn.Module, save_dir: str = "", **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.incompatible = None

    def load(self, path: str, *args, **kwargs) -> Dict[str, Any]:
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
        return torch.load(f, map_location=torch.device("cpu"), weights_only=True)

    def _model_zoo_layout(self, data: Any, filename: str) -> Dict[str, Any]:
        """A ``.pkl`` content in the layout DetectionCheckpointer gives it."""
        if not isinstance(data, dict):
            raise UnreadableCheckpointError(f"checkpoint {filename} holds a {type(data).__name__}, not a dict")
        if "model" in data and "__author__" in data:
            self.logger.info(f"Reading a file from '{data['__author__']}'")
            return data
        blobs = data.get("blobs", data)
        model = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
        return {"model": model, "__author__": "Caffe2", "matching_heuristics": True}

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        candidates = self._resume_candidates()
        if not candidates:
            raise UnreadableCheckpointError(f"{self.save_dir} holds no checkpoint file to resume from")
        for candidate, fallback in zip(candidates, candidates[1:] + [None]):
            try:
                return self.load(candidate)
            except UnreadableCheckpointError as error:
                if fallback is None:
                    raise UnreadableCheckpointError(
                        f"no readable checkpoint in {self.save_dir} to resume from (tried {candidates})"
                    ) from error
                logger.warning(f"{error}; resuming from the previous checkpoint {fallback} instead")

    def _resume_candidates(self) -> List[str]:
        """The last checkpoint, then the others of ``save_dir``, newest first; existing files only."""
        last = self.get_checkpoint_file()
        others = sorted(
            (f for f in self.get_all_checkpoint_files() if os.path.abspath(f) != os.path.abspath(last)),
            key=os.path.getmtime,
            reverse=True,
        )
        if os.path.isfile(last):
            return [last] + others
        logger.warning(f"the last checkpoint {last} does not exist; trying the others of {self.save_dir}")
        return others


class RandomWeightsError(ValueError):
    """Inference was asked of a model whose weights are (partly) random."""


def load_inference_weights(model: nn.Module, weights: Optional[str], *, allow_random: bool = False) -> None:
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
