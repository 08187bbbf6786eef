"""Reading YAML config files without running code they carry.

Detectron2's ``merge_from_file`` reads every file of a ``_BASE_`` chain with
``yaml.unsafe_load`` when a plain load fails, and a ``!!python/object/apply``
tag then runs code. Here the chain is resolved and read in one place, each
file with ``yaml.safe_load``, so the file that is read is the file that is
checked by construction. Only Detectron2's own installed configs, which
compute anchor sizes with a Python tag, are handed to Detectron2's loader.
"""
import os
from typing import Any, Dict, Tuple

import yaml
from detectron2.config import CfgNode

from ..errors import ConfigValueError

__all__ = ["load_config_file", "merge_config_file"]

BASE_KEY = "_BASE_"


def _is_detectron2_config(path: str) -> bool:
    import detectron2

    # The folder of detectron2.model_zoo, whose import would warn about pkg_resources.
    installed = os.path.realpath(os.path.join(os.path.dirname(detectron2.__file__), "model_zoo", "configs"))
    return os.path.realpath(path).startswith(installed + os.sep)


def _merge_into(source: Dict[str, Any], target: Dict[str, Any]) -> None:
    """Later files win, key by key, as in Detectron2's ``_BASE_`` merge."""
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(value, target[key])
        else:
            target[key] = value


def _resolve_base(base, path: str) -> str:
    if not isinstance(base, str) or not base:
        raise ConfigValueError(f"{path}: {BASE_KEY} = {base!r}: needs a file name or a list of file names")
    if "://" in base:
        raise ConfigValueError(f"{path}: {BASE_KEY} = {base!r}: config bases are read from files only, not URLs")
    base = os.path.expanduser(base)
    return base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)


def _read_yaml(path: str) -> Dict[str, Any]:
    try:
        with open(path, "rb") as f:
            content = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigValueError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigValueError(f"config file {path} is a folder") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else path
        problem = getattr(error, "problem", None) or error
        raise ConfigValueError(
            f"{where}: not a safe YAML config ({problem}); srn_d2 reads configs with yaml.safe_load, "
            "which refuses Python tags"
        ) from None
    if not isinstance(content, dict):
        what = "empty" if content is None else f"a YAML {type(content).__name__}, not a mapping of keys"
        raise ConfigValueError(f"config file {path} is {what}")
    return content


def load_config_file(filename: str, _chain: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """The content of ``filename`` with its ``_BASE_`` chain merged in, as plain data.

    A base is a file name or a list of them, relative to the file that names it
    (or absolute, or starting with ``~``); later bases, then the file itself,
    override earlier ones. Cycles, URLs, non-mapping files and Python tags are
    ConfigValueErrors naming the file.
    """
    path = os.path.abspath(os.path.expanduser(filename))
    if path in _chain:
        raise ConfigValueError(f"{BASE_KEY} cycle: {' -> '.join(_chain + (path,))}")
    if _is_detectron2_config(path):
        return CfgNode.load_yaml_with_base(path, allow_unsafe=True)
    content = _read_yaml(path)
    bases = content.pop(BASE_KEY, [])
    merged: Dict[str, Any] = {}
    for base in [bases] if not isinstance(bases, list) else bases:
        _merge_into(load_config_file(_resolve_base(base, path), _chain + (path,)), merged)
    _merge_into(content, merged)
    return merged


def merge_config_file(cfg: CfgNode, filename: str) -> None:
    """``cfg.merge_from_file(filename)`` through :func:`load_config_file`.

    Unknown keys, renamed keys and values of the wrong type are
    ConfigValueErrors naming the file.
    """
    loaded = CfgNode(load_config_file(filename))
    version = loaded.get("VERSION", cfg.VERSION)
    if version != cfg.VERSION:
        raise ConfigValueError(f"{filename}: VERSION = {version!r}: srn_d2 reads version {cfg.VERSION} configs")
    try:
        cfg.merge_from_other_cfg(loaded)
    except (KeyError, ValueError) as error:
        raise ConfigValueError(f"{filename}: {error.args[0] if error.args else error}") from None
