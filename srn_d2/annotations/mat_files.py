"""MATLAB .mat files read safely: only the variables asked for, every failure named against the file."""

from typing import Dict, Sequence

from scipy.io import loadmat, whosmat

from ..errors import InputError

__all__ = ["load_mat"]


def load_mat(path: str, keys: Sequence[str]) -> Dict:
    """scipy's loadmat of the variables ``keys`` alone (the others are skipped unread, however
    large), with any failure or missing variable reported against ``path``."""
    try:
        content = loadmat(path, variable_names=list(keys))
    except FileNotFoundError:
        raise
    except Exception as error:  # scipy raises many types for a damaged file; each names no file
        raise InputError(
            f"{path}: not a readable MATLAB .mat file ({type(error).__name__}: {error})"
        ) from None
    missing = [key for key in keys if key not in content]
    if missing:
        held = sorted(name for name, _, _ in whosmat(path))
        raise InputError(f"{path}: no variable {missing} (holds {held})")
    return content
