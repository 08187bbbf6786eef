"""SRN face detector as a Detectron2 extension.

    from detectron2.config import get_cfg
    from srn_d2 import add_srn_config

    cfg = get_cfg()
    add_srn_config(cfg)  # also registers SRN's components and the face datasets

Each subpackage registers what it defines when imported, as Detectron2's do:
``srn_d2.modeling`` the meta-architecture, backbones, heads and anchor
generator; ``srn_d2.data`` the face datasets. ``import srn_d2`` alone loads
nothing heavy, so that the numpy-only parts (the WIDER FACE protocol and its
command line, the ONNX runtime) start without torch or Detectron2.
"""

__all__ = ["add_srn_config"]


def add_srn_config(cfg) -> None:
    """Add srn_d2's config keys to ``cfg`` (see ``srn_d2.config``), registering what they name."""
    from . import data, modeling  # noqa: F401  (registers the models and datasets the keys name)
    from .config import add_srn_config as add_keys

    add_keys(cfg)
