"""The cleaned AFW and PASCAL faces ground truth that face papers score with: the files of
the evaluation toolbox of Mathias et al. (ECCV 2014), read for the datasets
(:mod:`srn_d2.data.face_benchmarks`) and the protocol (:mod:`srn_d2.evaluation.face_benchmarks`).

A file (``new_annotations_AFW.mat``, ``Annotations_Face_PASCALLayout_large_fixed.mat``)
holds a struct array ``Annotations`` with, per image, ``imgname`` and ``objects``,
rows ``x1 y1 x2 y2 0 ignore``. Images are keyed by their file name up to its
first dot, as the toolbox keys them. A face counts unless flagged ignore, or
narrower or shorter than :data:`MIN_FACE_SIDE` (30 px, sides measured as
``x2 - x1`` and ``y2 - y1``).
"""

import os
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from ..errors import InputError, require_unique_images
from ..utils.image_checks import MAX_COORDINATE
from .mat_files import load_mat

__all__ = [
    "BENCHMARKS",
    "MIN_FACE_SIDE",
    "FaceBenchmarkGroundTruth",
    "image_key",
    "load_benchmark_mat",
]

# Benchmark name -> the toolbox's ground-truth file.
BENCHMARKS = {
    "afw": "new_annotations_AFW.mat",
    "pascal": "Annotations_Face_PASCALLayout_large_fixed.mat",
}
MIN_FACE_SIDE = 30


def image_key(name: str) -> str:
    """The toolbox's key of an image: its file name up to the first dot."""
    return os.path.basename(name.replace("\\", "/")).split(".")[0]


@dataclass(frozen=True)
class FaceBenchmarkGroundTruth:
    """Faces of every image, concatenated.

    Attributes:
        image_names: each image's file name, as the file lists it.
        keys: :func:`image_key` of each image.
        boxes: (F, 4) float64 ``x1, y1, x2, y2``, image after image.
        flagged: (F,) bool, the file's own ignore flag.
        offsets: (N + 1,) faces of image i are ``boxes[offsets[i]:offsets[i + 1]]``.
    """

    image_names: Tuple[str, ...]
    keys: Tuple[str, ...]
    boxes: np.ndarray
    flagged: np.ndarray
    offsets: np.ndarray

    @property
    def ignored(self) -> np.ndarray:
        """(F,) bool: flagged, or narrower or shorter than MIN_FACE_SIDE."""
        sides = np.abs(self.boxes[:, 2:] - self.boxes[:, :2])
        return self.flagged | (sides < MIN_FACE_SIDE).any(axis=1)

    @property
    def num_faces(self) -> int:
        return len(self.boxes)


def load_benchmark_mat(path: str) -> FaceBenchmarkGroundTruth:
    """The toolbox's ground truth file; ValueError naming the file (and image) if it is not laid out as one."""
    annotations = load_mat(path, ("Annotations",))["Annotations"].reshape(-1)
    names, boxes, flagged, counts = [], [], [], []
    for index, entry in enumerate(annotations):
        try:
            name = str(entry["imgname"].reshape(-1)[0])
            objects = np.asarray(entry["objects"], dtype=np.float64)
        except (IndexError, ValueError, TypeError) as error:
            raise InputError(
                f"{path}: entry {index + 1} has no imgname / objects ({error})"
            ) from None
        objects = objects.reshape(-1, objects.shape[-1] if objects.size else 6)
        if objects.shape[1] < 4 or not np.isfinite(objects).all():
            raise InputError(
                f"{path}: objects of {name} are not finite rows of x1 y1 x2 y2 [0 ignore]"
            )
        if (np.abs(objects[:, :4]) > MAX_COORDINATE).any():
            raise InputError(
                f"{path}: a face of {name} has a corner beyond any image (more than "
                f"{MAX_COORDINATE:,.0f} px)"
            )
        if ((objects[:, 2] < objects[:, 0]) | (objects[:, 3] < objects[:, 1])).any():
            raise InputError(f"{path}: a face of {name} has x2 < x1 or y2 < y1")
        names.append(name)
        boxes.append(objects[:, :4])
        flagged.append(
            objects[:, 5] != 0 if objects.shape[1] >= 6 else np.zeros(len(objects), bool)
        )
        counts.append(len(objects))
    keys = [image_key(name) for name in names]
    # Two files of one key would have their faces merged by the toolbox.
    require_unique_images(keys, [f"{path}: {name}" for name in names])
    return FaceBenchmarkGroundTruth(
        image_names=tuple(names),
        keys=tuple(keys),
        boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4)),
        flagged=np.concatenate(flagged) if flagged else np.zeros(0, bool),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
    )
