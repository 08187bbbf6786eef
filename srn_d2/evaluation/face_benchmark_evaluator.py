"""Detectron2 DatasetEvaluator for AFW and PASCAL faces (the toolbox's AP, see ``face_benchmarks``)."""

from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import os
from collections import OrderedDict
from typing import Optional

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..data.datasets_root import resolve_dataset_path
from ..annotations.face_benchmarks import load_benchmark_mat
from .face_benchmarks import BenchmarkDetections, evaluate_benchmark, write_benchmark_detections
from .face_evaluator import FaceDetectionEvaluator

DETECTIONS_FILE = "detections.txt"


class FaceBenchmarkEvaluator(FaceDetectionEvaluator):
    """AP of an AFW or PASCAL faces dataset (metadata ``gt_file``: the toolbox's ``.mat``),
    without and with the toolbox's calibration; the detections go to ``detections.txt`` in
    the toolbox's format, so that its own scripts and ``evaluate_face_benchmark`` read them.

    Returns ``{dataset: {"AP": percent, "AP_calibrated": percent}}``.
    """

    def __init__(
        self, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True
    ):
        super().__init__(dataset_name, output_dir, distributed)
        self.results = None

    def evaluate(self):
        predictions = self._gathered_predictions()
        if predictions is None:
            return {}
        gt = load_benchmark_mat(
            resolve_dataset_path(MetadataCatalog.get(self._dataset_name).gt_file)
        )
        names = [str(record["image_id"]) for record in DatasetCatalog.get(self._dataset_name)]
        # x, y, w, h, score -> x1, y1, x2, y2, score
        xyxys = {
            name: np.concatenate([p[:, :2], p[:, :2] + p[:, 2:4], p[:, 4:]], axis=1)
            for name, p in ((name, predictions.get(name, np.zeros((0, 5)))) for name in names)
        }
        if self._output_dir:
            path = os.path.join(self._output_dir, DETECTIONS_FILE)
            write_benchmark_detections(path, xyxys)
            self._logger.info(f"{self._dataset_name}: detections written to {path}")
        index_of = {key: i for i, key in enumerate(gt.keys)}
        images = np.concatenate(
            [np.full(len(boxes), index_of[name], dtype=np.int64) for name, boxes in xyxys.items()]
            + [np.zeros(0, np.int64)]
        )
        values = np.concatenate(
            [boxes.reshape(-1, 5) for boxes in xyxys.values()] + [np.zeros((0, 5))]
        )
        self.results = evaluate_benchmark(
            BenchmarkDetections.sorted(images, values[:, 4], values[:, :4]), gt
        )
        self._logger.info(
            f"{self._dataset_name}: AP {100 * self.results['AP']:.2f}, with calibration "
            f"{100 * self.results['AP_calibrated']:.2f} ({self.results['dropped_small']} detections of at most "
            f"21 x 21 px dropped, as the toolbox drops them)"
        )
        return OrderedDict(
            {
                self._dataset_name: {
                    "AP": 100.0 * self.results["AP"],
                    "AP_calibrated": 100.0 * self.results["AP_calibrated"],
                }
            }
        )
