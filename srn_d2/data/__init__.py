"""Face datasets (WIDER FACE, FDDB, the generated mini_faces), the SRN training
augmentation and the dataset mapper. Importing this package registers the
datasets (lazily: no file is read until a dataset is loaded).
"""

from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
from . import builtin  # noqa: F401  (registers the datasets)
from .augmentation import (
    ExpandTransform,
    PhotometricDistortionTransform,
    RandomExpand,
    RandomPhotometricDistortion,
    RandomSquareCrop,
    SquareCropTransform,
    build_srn_test_augmentation,
    build_srn_train_augmentation,
)
from .dataset_mapper import SRNDatasetMapper
from .fddb import ellipse_to_box, load_fddb
from .mini_faces import ensure_mini_faces, generate_mini_faces, render_mini_faces_image
from .datasets_root import datasets_root
from .wider_face import load_wider_face, load_wider_face_test_list, register_wider_face_format

__all__ = [
    "ExpandTransform",
    "PhotometricDistortionTransform",
    "RandomExpand",
    "RandomPhotometricDistortion",
    "RandomSquareCrop",
    "SRNDatasetMapper",
    "SquareCropTransform",
    "build_srn_test_augmentation",
    "build_srn_train_augmentation",
    "datasets_root",
    "ellipse_to_box",
    "ensure_mini_faces",
    "generate_mini_faces",
    "load_fddb",
    "load_wider_face",
    "load_wider_face_test_list",
    "register_wider_face_format",
    "render_mini_faces_image",
]
