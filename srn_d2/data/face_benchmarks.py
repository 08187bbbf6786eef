"""AFW and PASCAL faces as Detectron2 datasets, from the toolbox's cleaned ground truth
(see :mod:`srn_d2.annotations.face_benchmarks` for the files)."""

import logging
import os
from typing import Dict, List

from detectron2.structures import BoxMode

from ..annotations.face_benchmarks import load_benchmark_mat
from ..utils.file_io import check_relative_path

logger = logging.getLogger(__name__)


def load_face_benchmark(gt_file: str, image_root: str) -> List[Dict]:
    """Dataset dicts of a toolbox ``.mat`` file; images at ``<image_root>/<imgname>``.

    Faces the protocol ignores (flagged, or narrower or shorter than 30 px)
    have ``iscrowd=1``, as Detectron2 marks regions not to score; ``image_id``
    is the toolbox's key of the image (its name up to the first dot).
    """
    gt = load_benchmark_mat(gt_file)
    ignored = gt.ignored
    dataset_dicts = []
    for index, (name, key) in enumerate(zip(gt.image_names, gt.keys)):
        first, last = gt.offsets[index], gt.offsets[index + 1]
        annotations = [
            {"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": int(crowd)}
            for box, crowd in zip(gt.boxes[first:last].tolist(), ignored[first:last].tolist())
        ]
        file_name = os.path.join(
            image_root, check_relative_path(name, f"{gt_file}: image {index + 1}")
        )
        dataset_dicts.append({"file_name": file_name, "image_id": key, "annotations": annotations})
    logger.info(
        f"{gt_file}: {len(dataset_dicts)} images, {gt.num_faces} faces, {int(ignored.sum())} ignored"
    )
    return dataset_dicts
