"""SRN face detector as a Detectron2 extension.

    from detectron2.config import get_cfg
    from srn_d2 import add_srn_config

    cfg = get_cfg()
    add_srn_config(cfg)  # also registers SRN's components and the face datasets

Each subpackage registers what it defines when imported, as Detectron2's do:
``srn_d2.modeling`` the meta-architecture, backbones, heads and anchor
generator; ``srn_d2.data`` the face datasets. ``import srn_d2`` alone loads
nothing heavy (``add_srn_config`` is imported on first use), so that the
numpy-only parts (the WIDER FACE protocol and its command line, the ONNX
runtime) start without torch or Detectron2.
"""

__all__ = ["add_srn_config"]


def __getattr__(name: str):
    if name == "add_srn_config":
        from .config import add_srn_config

        return add_srn_config
    raise AttributeError(f"module 'srn_d2' has no attribute {name!r}")
