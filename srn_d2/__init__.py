"""SRN face detector as a Detectron2 extension.

Importing the package registers everything: the SRN meta-architecture, the
SRN backbone, heads and anchor generators, and the face datasets.
"""
from .config import add_srn_config
from . import modeling  # noqa: F401  (registers models)
from . import data  # noqa: F401  (registers datasets)
from . import evaluation  # noqa: F401

__all__ = ["add_srn_config"]
