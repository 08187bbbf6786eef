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
    installed = os.path.realpath(
        os.path.join(os.path.dirname(detectron2.__file__), "model_zoo", "configs")
    )
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
        raise ConfigValueError(
            f"{path}: {BASE_KEY} = {base!r}: needs a file name or a list of file names"
        )
    if "://" in base:
        raise ConfigValueError(
            f"{path}: {BASE_KEY} = {base!r}: config bases are read from files only, not URLs"
        )
    base = os.path.expanduser(base)
    return base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)


# Nodes a config may hold once its aliases are expanded; a whole Detectron2 config holds a few hundred.
MAX_EXPANDED_NODES = 100_000


class _SafeLoaderBoundingAliases(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a document whose aliases (``*name``) expand past
    :data:`MAX_EXPANDED_NODES` nodes, as it meets them.

    Aliases cost nothing to parse, but every node that repeats one is copied on its way into a
    config: a few hundred bytes of nested aliases would ask for gigabytes. Configs that
    Detectron2 dumps repeat a value or two by alias; those load.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._expanded = 0
        self._sizes = {}

    def compose_node(self, parent, index):
        is_alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        node = super().compose_node(parent, index)
        self._expanded += self._size(node) if is_alias else 1
        if self._expanded > MAX_EXPANDED_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"its aliases (*name) expand to more than {MAX_EXPANDED_NODES:,} values",
                mark,
            )
        return node

    def _size(self, node) -> int:
        """Nodes in ``node`` with every alias in it expanded (each distinct node sized once)."""
        if id(node) not in self._sizes:
            if isinstance(node, yaml.MappingNode):
                children = [child for pair in node.value for child in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = node.value
            else:
                children = []
            self._sizes[id(node)] = 1 + sum(self._size(child) for child in children)
        return self._sizes[id(node)]


def _read_yaml(path: str) -> Dict[str, Any]:
    try:
        with open(path, "rb") as f:
            content = yaml.load(f, Loader=_SafeLoaderBoundingAliases)
    except FileNotFoundError:
        raise ConfigValueError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigValueError(f"config file {path} is a folder") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else path
        problem = getattr(error, "problem", None) or error
        raise ConfigValueError(
            f"{where}: not a safe YAML config ({problem}); srn_d2 reads configs with yaml.safe_load's rules, "
            "which refuse Python tags"
        ) from None
    if not isinstance(content, dict):
        what = (
            "empty"
            if content is None
            else f"a YAML {type(content).__name__}, not a mapping of keys"
        )
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
    # Detectron2's own YAML configs only: its .py LazyConfigs are no YAML, and read safely they are
    # a parse error naming the file.
    if _is_detectron2_config(path) and path.endswith(".yaml"):
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
        raise ConfigValueError(
            f"{filename}: VERSION = {version!r}: srn_d2 reads version {cfg.VERSION} configs"
        )
    try:
        cfg.merge_from_other_cfg(loaded)
    except (KeyError, ValueError) as error:
        raise ConfigValueError(f"{filename}: {error.args[0] if error.args else error}") from None
