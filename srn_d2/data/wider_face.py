"""WIDER FACE annotations (``wider_face_*_bbx_gt.txt``, ``wider_face_test_filelist.txt``)
as Detectron2 dataset dicts, and registration of any data laid out in that format.
"""

import contextlib
import gc
import logging
import os
from typing import Dict, List

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..utils.file_io import check_relative_path
from ..errors import InputError, require_unique_images
from .annotation_text import read_counted_records, read_text_lines
from .image_io import read_image_size

logger = logging.getLogger(__name__)

# Columns of a face line, after "x1 y1 w h".
WIDER_ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
_NUM_FIELDS = 4 + len(WIDER_ATTRIBUTES)

# easy: sqrt(w * h) >= 50 px, medium: >= 20 px, hard: every valid face.
DIFFICULTY_BY_SIZE = (50, 20)


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector.

    Building ~10^5 annotation dicts triggers dozens of full collections that
    find nothing (the dicts hold no cycles) and cost more than the building itself.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def image_id_from_path(relative_path: str) -> str:
    """The image path without its extension: ``"0--Parade/0_Parade_marchingband_1_465"``.

    The WIDER FACE evaluator matches predictions to ground truth by this id.
    """
    return os.path.splitext(relative_path)[0]


def load_wider_face(gt_file: str, image_root: str, *, read_sizes: bool = True) -> List[Dict]:
    """Dataset dicts of a WIDER FACE ``*_bbx_gt.txt`` file.

    Each face keeps its attributes; invalid faces get ``iscrowd=1`` so that
    training ignores them. Faces of zero width or height are dropped (and logged).
    Image paths must be relative and stay inside ``image_root``.

    Args:
        gt_file: the annotation file.
        image_root: folder holding ``<event>/<image>.jpg``.
        read_sizes: read height/width from the image headers (skipped for
            images that are missing; detectron2 then takes them from the decoded image).
    """
    parsed = read_counted_records(gt_file, _NUM_FIELDS, zero_count_placeholder=True)
    records = parsed.records
    has_area = (records[:, 2] > 0) & (records[:, 3] > 0)
    num_empty = int((~has_area).sum())
    if num_empty:
        logger.warning(
            f"{gt_file}: dropped {num_empty} faces of zero width or height "
            f"(first at line {int(parsed.record_lines[~has_area][0])})"
        )
    faces_per_image = np.bincount(parsed.image_index[has_area], minlength=len(parsed.names))
    with gc_paused():
        annotations = _face_annotations(records[has_area])

    places = [f"{gt_file}:{line}" for line in parsed.name_lines]
    return image_records(parsed.names, places, faces_per_image, annotations, image_root, read_sizes)


def image_records(
    names, places, faces_per_image, annotations, image_root: str, read_sizes: bool
) -> List[Dict]:
    """One dataset dict per image, in file order, each with its run of the file-ordered ``annotations``.

    ``places`` name each image's line for the error of a path that is absolute
    or leaves ``image_root``.
    """
    dataset_dicts = []
    stop = 0
    for name, place, num_faces in zip(names, places, faces_per_image.tolist()):
        check_relative_path(name, place)
        start, stop = stop, stop + num_faces
        record = image_record(name, image_root, read_sizes)
        record["annotations"] = annotations[start:stop]
        dataset_dicts.append(record)
    return dataset_dicts


def load_wider_face_test_list(file_list: str, image_root: str, *, read_sizes: bool = True):
    """Dataset dicts (no annotations) of ``wider_face_test_filelist.txt``: one relative image path a line."""
    listed = [
        (name.strip(), f"{file_list}:{number}")
        for number, name in enumerate(read_text_lines(file_list), start=1)
        if name.strip()
    ]
    if not listed:
        raise InputError(f"{file_list}: lists no image (the file is empty or blank)")
    require_unique_images([name for name, _ in listed], [place for _, place in listed])
    return [
        image_record(check_relative_path(name, place), image_root, read_sizes)
        for name, place in listed
    ]


def register_wider_face_format(name: str, image_root: str, gt_file: str, **metadata) -> None:
    """Register a folder of images annotated in the WIDER FACE text format under ``name``.

    Nothing is read until ``DatasetCatalog.get(name)``. ``metadata`` overrides
    or extends the defaults (thing_classes, evaluator_type "widerface",
    image_root, gt_file, difficulty_by_size).
    """
    DatasetCatalog.register(name, lambda: load_wider_face(gt_file, image_root))
    defaults = dict(
        thing_classes=["face"],
        evaluator_type="widerface",
        image_root=image_root,
        gt_file=gt_file,
        difficulty_by_size=DIFFICULTY_BY_SIZE,
    )
    MetadataCatalog.get(name).set(**{**defaults, **metadata})


def _face_annotations(records: np.ndarray) -> List[Dict]:
    boxes = records[:, :4].tolist()
    attributes = records[:, 4:].astype(np.int64).tolist()
    return [
        {
            "bbox": box,
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 0,
            "iscrowd": int(invalid != 0),
            "blur": blur,
            "expression": expression,
            "illumination": illumination,
            "invalid": invalid,
            "occlusion": occlusion,
            "pose": pose,
        }
        for box, (blur, expression, illumination, invalid, occlusion, pose) in zip(
            boxes, attributes
        )
    ]


def image_record(relative_path: str, image_root: str, read_sizes: bool) -> Dict:
    """One image's dataset dict without annotations: file_name, image_id, and its size when readable."""
    file_name = os.path.join(image_root, relative_path)
    record = {"file_name": file_name, "image_id": image_id_from_path(relative_path)}
    size = read_image_size(file_name) if read_sizes else None
    if size is not None:
        record["height"], record["width"] = size
    return record
