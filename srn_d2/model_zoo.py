"""srn_d2's config files, shipped inside the package as Detectron2 ships its own: YAML
configs, and LazyConfig (``.py``) twins of the main ones.

    from srn_d2 import model_zoo
    cfg_file = model_zoo.get_config_file("SRN_R_50_FPN_widerface.yaml")
    cfg = model_zoo.get_config("SRN_mini.py")       # a LazyConfig: cfg.model, cfg.dataloader, ...
    cfg = model_zoo.get_config("SRN_mini.yaml")     # a frozen CfgNode, as setup_cfg builds it

A ``.py`` config is a Python program and runs when loaded; load only configs you
trust. YAML configs are read without running anything.
"""

import os
from typing import List, Sequence

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def list_config_files() -> List[str]:
    """Names of the shipped config files (YAML and LazyConfig)."""
    return sorted(name for name in os.listdir(CONFIG_DIR) if name.endswith((".yaml", ".py")))


def get_config_file(name: str) -> str:
    """Path of the shipped config ``name`` (e.g. "SRN_mini.yaml"), wherever srn_d2 is installed."""
    path = os.path.join(CONFIG_DIR, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"srn_d2 ships no config {name!r}; it has {list_config_files()}")
    return path


def get_config(name: str, overrides: Sequence[str] = ()):
    """The shipped config ``name``: a LazyConfig for ``.py`` (``overrides`` as ``key=value``),
    a frozen CfgNode for ``.yaml`` (``overrides`` as ``KEY VALUE`` pairs), as
    :func:`detectron2.model_zoo.get_config` returns both kinds."""
    path = get_config_file(name)
    if name.endswith(".py"):
        from .engine.lazy_config import load_lazy_config

        return load_lazy_config(path, overrides)
    from .engine.defaults import setup_cfg

    return setup_cfg(path, overrides)
