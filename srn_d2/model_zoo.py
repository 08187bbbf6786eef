"""srn_d2's config files, shipped inside the package as Detectron2 ships its own.

    from srn_d2 import model_zoo
    cfg_file = model_zoo.get_config_file("SRN_R_50_FPN_widerface.yaml")
"""
import os
from typing import List

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def list_config_files() -> List[str]:
    """Names of the shipped config files."""
    return sorted(name for name in os.listdir(CONFIG_DIR) if name.endswith(".yaml"))


def get_config_file(name: str) -> str:
    """Path of the shipped config ``name`` (e.g. "SRN_mini.yaml"), wherever srn_d2 is installed."""
    path = os.path.join(CONFIG_DIR, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"srn_d2 ships no config {name!r}; it has {list_config_files()}")
    return path
