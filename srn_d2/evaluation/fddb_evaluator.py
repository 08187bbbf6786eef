"""Detectron2 DatasetEvaluator for FDDB (true positive rate at 1000 false positives)."""

from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import os
from collections import OrderedDict
from typing import Dict, Iterable, Mapping, Optional, Tuple

import numpy as np
from detectron2.data import DatasetCatalog

from .face_evaluator import FaceDetectionEvaluator
from .fddb_protocol import FDDBRoc, evaluate_fddb
from .prediction_files import write_fddb_detections

DETECTIONS_FILE = "fddb_detections.txt"
MAX_FALSE_POSITIVES = 1000


def fddb_gt_from_dicts(
    dataset_dicts: Iterable[Mapping],
) -> Dict[str, Tuple[np.ndarray, Optional[Tuple[int, int]]]]:
    """image_id -> (ellipses (m, 5) ``ra, rb, theta, cx, cy``, (height, width) or None)."""
    ground_truth = {}
    for record in dataset_dicts:
        ellipses = np.array(
            [a["ellipse"][:5] for a in record.get("annotations", [])], dtype=np.float64
        ).reshape(-1, 5)
        has_size = "height" in record and "width" in record
        size = (record["height"], record["width"]) if has_size else None
        ground_truth[str(record["image_id"])] = (ellipses, size)
    return ground_truth


class FDDBEvaluator(FaceDetectionEvaluator):
    """Official FDDB discrete-score evaluation (see ``fddb_protocol``) of a dataset
    whose annotations carry ``"ellipse": [ra, rb, theta, cx, cy]``.

    Returns ``{"fddb": {"TPR_at_1000FP": percent}}``; ``self.roc`` keeps the ROC.
    """

    def __init__(
        self, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True
    ):
        """
        Args:
            output_dir: if set, detections are written there in the FDDB format
                (``fddb_detections.txt``, images in dataset order).
        """
        super().__init__(dataset_name, output_dir, distributed)
        self.roc: Optional[FDDBRoc] = None

    def evaluate(self):
        predictions = self._gathered_predictions()
        if predictions is None:
            return {}

        ground_truth = fddb_gt_from_dicts(DatasetCatalog.get(self._dataset_name))
        if self._output_dir:
            path = os.path.join(self._output_dir, DETECTIONS_FILE)
            ordered = {name: predictions.get(name, np.zeros((0, 5))) for name in ground_truth}
            write_fddb_detections(path, ordered)
            self._logger.info(f"FDDB detections written to {path}")
        missing = sum(name not in predictions for name in ground_truth)
        if missing:
            self._logger.warning(
                f"{self._dataset_name}: {missing} images have no predictions (counted as none)"
            )

        self.roc = evaluate_fddb(predictions, ground_truth)
        tpr = self.roc.tpr_at_false_positives(MAX_FALSE_POSITIVES)
        self._logger.info(
            f"FDDB {self._dataset_name}: TPR at {MAX_FALSE_POSITIVES} FP = {100 * tpr:.2f}%"
        )
        return OrderedDict({"fddb": {"TPR_at_1000FP": 100.0 * tpr}})
