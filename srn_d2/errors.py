"""srn_d2's error types and the one way code checks a config value.

Every check of a config value or command-line option goes through
:func:`require` (or the two helpers built on it), so that every such message
has the same shape: ``KEY = VALUE: what it must be``. The command-line tools
report :data:`REPORTED_ERRORS` as one ``error:`` line and exit status 2
(``srn_d2.tools.run_command``): the message already names the file, line or
key at fault, and a traceback would only bury it.

:func:`require_unique_images` is the one check for an image listed twice,
shared by every annotation reader (WIDER format, FDDB folds, AFW / PASCAL).

This module imports neither torch nor Detectron2, so that the numpy-only
tools can use it.
"""

import os
import pickle
from typing import Sequence

__all__ = [
    "InputError",
    "ConfigValueError",
    "UnsafeCheckpointError",
    "UnreadableCheckpointError",
    "RandomWeightsError",
    "ImageTooLargeError",
    "ExportError",
    "OutputPathError",
    "REPORTED_ERRORS",
    "require",
    "require_norm",
    "require_iou_thresholds",
    "require_unique_images",
]


class InputError(ValueError):
    """Bad input that srn_d2 itself found and named (a file and line, a key, an image): reported
    as one line. A ValueError of any other origin is a bug, and keeps its traceback."""


class ConfigValueError(InputError):
    """A config key or command-line option holds a value that cannot be used."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint names a Python object that unpickling would call: it could run code."""


class UnreadableCheckpointError(OSError):
    """A checkpoint file is missing, truncated or not a checkpoint."""


class ImageTooLargeError(InputError):
    """An image the network would run on at more pixels than the detectors take."""


class RandomWeightsError(InputError):
    """Inference was asked of a model whose weights are (partly) random."""


class ExportError(RuntimeError):
    """An exported model does not give the PyTorch model's detections."""


class OutputPathError(InputError):
    """A file srn_d2 was asked to write cannot be written safely (a link, a folder, no write access)."""


# Bad input (files, values, weights, the machine's files) as opposed to bugs: reported without a traceback.
REPORTED_ERRORS = (InputError, OSError, UnsafeCheckpointError, ExportError)


def require(ok: bool, key: str, value, requirement: str) -> None:
    """ConfigValueError ``"KEY = VALUE: requirement"`` unless ``ok``."""
    if not ok:
        raise ConfigValueError(f"{key} = {value!r}: {requirement}")


def require_norm(norm: str, key: str) -> str:
    """``norm`` if detectron2.layers.get_norm knows it; else ConfigValueError naming ``key``."""
    from detectron2.layers import get_norm

    try:
        get_norm(norm, 32)
        known = True
    except KeyError:
        known = False
    require(
        known,
        key,
        norm,
        'not a normalization detectron2.layers.get_norm knows (e.g. "", "BN", "SyncBN", "FrozenBN", "GN", "LN")',
    )
    return norm


def require_iou_thresholds(thresholds, key: str) -> list:
    """[negative below, positive from] IoUs: two sorted values in (0, 1]."""
    values = list(thresholds)
    require(
        len(values) == 2 and 0 < values[0] <= values[1] <= 1,
        key,
        thresholds,
        "needs two IoUs [negative below, positive from] with 0 < first <= second <= 1",
    )
    return values


def require_unique_images(names: Sequence[str], places: Sequence[str]) -> None:
    """ValueError naming both places (``file:line``) of the first image listed twice.

    An image listed twice would be evaluated twice (its faces counted twice,
    halving its detections' recall) or have one list of faces overwrite the other.
    """
    first_place = {}
    for name, place in zip(names, places):
        # One image under two spellings ("a//b.jpg", "./a/b.jpg") is still one image.
        key = os.path.normpath(name) if isinstance(name, str) and name else name
        if key in first_place:
            first_name, first = first_place[key]
            spelled = f" (as {first_name})" if first_name != name else ""
            raise InputError(
                f"{place}: image {name} is listed again (first at {first}{spelled}); "
                "each image may be listed once"
            )
        first_place[key] = (name, place)
