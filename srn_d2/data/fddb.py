"""FDDB ellipse annotations (``FDDB-fold-NN-ellipseList.txt``) as Detectron2 dataset dicts."""

import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.structures import BoxMode

from ..errors import InputError, require_unique_images
from .annotation_text import read_counted_records
from .image_io import read_image_size
from ..utils.file_io import check_relative_path

logger = logging.getLogger(__name__)

# major_axis_radius minor_axis_radius angle center_x center_y detection_flag
_NUM_FIELDS = 6
NUM_FOLDS = 10


# Radii and centres beyond this are errors in the file: squared, they overflow, and
# rasterizing such an ellipse for the evaluation would take any amount of memory.
MAX_ELLIPSE_PX = 1e5


def fold_file_name(fold: int) -> str:
    return f"FDDB-fold-{fold:02d}-ellipseList.txt"


def ellipse_to_box(
    ellipses: np.ndarray, image_size: Optional[Tuple[int, int]] = None
) -> np.ndarray:
    """Tight axis-aligned XYXY boxes of rotated ellipses.

    Args:
        ellipses: (N, 5) rows of (major radius, minor radius, angle of the major
            axis from the x axis in radians, center x, center y).
        image_size: (height, width); boxes are clipped to the image when given.
    """
    ellipses = np.asarray(ellipses, dtype=np.float64).reshape(-1, 5)
    major, minor, angle, cx, cy = ellipses.T
    cos, sin = np.cos(angle), np.sin(angle)
    half_width = np.sqrt((major * cos) ** 2 + (minor * sin) ** 2)
    half_height = np.sqrt((major * sin) ** 2 + (minor * cos) ** 2)
    boxes = np.stack([cx - half_width, cy - half_height, cx + half_width, cy + half_height], 1)
    if image_size is not None:
        height, width = image_size
        boxes = np.clip(boxes, 0, [width, height, width, height])
    return boxes


def load_fddb(fold_files: Sequence[str], image_root: str, *, read_sizes: bool = True) -> List[Dict]:
    """Dataset dicts of one or more FDDB fold files, in the given order.

    Images live at ``<image_root>/<path in file>.jpg``. Each face's box is the
    bounding box of its ellipse (clipped to the image when its size is known);
    the ellipse itself is kept as ``"ellipse": [ra, rb, theta, cx, cy]``.
    """
    dataset_dicts, places = [], []
    for fold_file in fold_files:
        fold = _load_fold(fold_file, image_root, read_sizes)
        dataset_dicts.extend(fold)
        places += [fold_file] * len(fold)
    require_unique_images([record["image_id"] for record in dataset_dicts], places)
    return dataset_dicts


def _load_fold(fold_file: str, image_root: str, read_sizes: bool) -> List[Dict]:
    parsed = read_counted_records(fold_file, _NUM_FIELDS, zero_count_placeholder=False)
    ellipses = parsed.records[:, :5]
    implausible = (np.abs(ellipses[:, [0, 1, 3, 4]]) > MAX_ELLIPSE_PX).any(axis=1)
    if implausible.any():
        line = int(parsed.record_lines[implausible][0])
        raise InputError(
            f"{fold_file}:{line}: an ellipse radius or centre beyond {MAX_ELLIPSE_PX:g} px "
            f"({ellipses[implausible][0].tolist()}); no photo is that large"
        )
    num_dropped = 0
    dataset_dicts = []
    for name, line, start, count in zip(
        parsed.names, parsed.name_lines, parsed.offsets.tolist(), parsed.counts.tolist()
    ):
        file_name = os.path.join(
            image_root, check_relative_path(name, f"{fold_file}:{line}") + ".jpg"
        )
        record = {"file_name": file_name, "image_id": name}
        size = read_image_size(file_name) if read_sizes else None
        if size is not None:
            record["height"], record["width"] = size
        image_ellipses = ellipses[start : start + count]
        boxes = ellipse_to_box(image_ellipses, size)
        has_area = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        num_dropped += int((~has_area).sum())
        record["annotations"] = _face_annotations(boxes[has_area], image_ellipses[has_area])
        dataset_dicts.append(record)
    if num_dropped:
        logger.warning(f"{fold_file}: dropped {num_dropped} faces of zero width or height")
    return dataset_dicts


def _face_annotations(boxes_xyxy: np.ndarray, ellipses: np.ndarray) -> List[Dict]:
    # XYWH like WIDER FACE, so that consumers see one box mode for every face dataset.
    boxes_xywh = np.concatenate([boxes_xyxy[:, :2], boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]], 1)
    return [
        {
            "bbox": box,
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 0,
            "iscrowd": 0,
            "ellipse": ellipse,
        }
        for box, ellipse in zip(boxes_xywh.tolist(), ellipses.tolist())
    ]
