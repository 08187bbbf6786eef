"""Detectron2 DatasetEvaluator for the WIDER FACE protocol (easy / medium / hard AP)."""

from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import os
import time
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import create_small_table

from ..data.dataset_mapper import annotation_boxes_xyxy
from ..data.datasets_root import resolve_dataset_path
from ..data.retinaface_labels import NUM_LANDMARKS
from ..errors import InputError
from .face_evaluator import FaceDetectionEvaluator
from .landmark_error import face_landmark_errors, landmark_metrics
from .prediction_files import (
    released_submission_rows,
    require_submission_format,
    write_widerface_predictions,
)
from .widerface_gt import WiderFaceGroundTruth, load_widerface_gt_mat, widerface_gt_from_dicts
from .widerface_protocol import PRCurve, WiderFaceMatches, warn_unmatched_ids, widerface_metrics

PREDICTIONS_DIR = "widerface_predictions"


class WiderFaceEvaluator(FaceDetectionEvaluator):
    """Official WIDER FACE evaluation of a dataset in the WIDER format.

    Ground truth, first match wins: ``gt_dir`` (official ``.mat`` files), the
    dataset metadata's ``gt_mat_dir``, else the dataset's own annotations with
    settings by face size (metadata ``difficulty_by_size``, see
    ``widerface_gt``). Every ground-truth image counts; images the model never
    saw count as having no predictions (one warning says how many).

    After :meth:`evaluate`, ``self.pr_curves`` maps easy/medium/hard to their
    IoU-0.5 :class:`PRCurve` (``.precision``, ``.recall``, ``.ap``) for plotting.

    A model that outputs ``pred_keypoints`` on a dataset whose faces have
    ``keypoints`` also gets its landmark error (``landmark_error``): NME in % of
    the face's box size, the shares under 0.05 and 0.1, the faces scored and missed.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        gt_dir: Optional[str] = None,
        submission_format: str = "precise",
    ):
        """
        Args:
            dataset_name: a registered dataset whose dicts have ``image_id``
                ``"<event>/<image stem>"``.
            output_dir: if set, the submission files are written under
                ``<output_dir>/widerface_predictions/<event>/<image>.txt``.
            distributed: gather predictions from all processes and evaluate on
                the main one.
            gt_dir: folder of the official ``.mat`` files; ``None`` or ``""``
                uses the metadata (pass ``cfg.TEST.WIDERFACE_GT_DIR`` here).
            submission_format: "precise" or "released" (see
                :func:`write_widerface_predictions`). With "released" the
                evaluation scores the rounded values the files hold, as the
                authors' numbers were computed from their files.
        """
        super().__init__(dataset_name, output_dir, distributed)
        self._submission_format = require_submission_format(submission_format)
        metadata = MetadataCatalog.get(dataset_name)
        self._gt_dir = gt_dir or metadata.get("gt_mat_dir", None)
        if self._gt_dir:
            self._gt_dir = resolve_dataset_path(self._gt_dir)
        self._difficulty_by_size = metadata.get("difficulty_by_size", None)
        if not self._gt_dir and self._difficulty_by_size is None:
            raise InputError(
                f"{dataset_name}: no WIDER FACE ground truth; give gt_dir or set the "
                "metadata 'gt_mat_dir' or 'difficulty_by_size'"
            )
        self._gt: Optional[WiderFaceGroundTruth] = None
        self._dicts: Optional[List[Dict]] = None
        self.pr_curves: Dict[str, PRCurve] = {}

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None):
        """Applies ``cfg.TEST.WIDERFACE_GT_DIR`` (when non-empty) and ``cfg.TEST.WIDERFACE_SUBMISSION_FORMAT``."""
        return cls(
            dataset_name,
            output_dir,
            gt_dir=cfg.TEST.WIDERFACE_GT_DIR or None,
            submission_format=cfg.TEST.WIDERFACE_SUBMISSION_FORMAT,
        )

    def ground_truth(self) -> WiderFaceGroundTruth:
        if self._gt is None:
            if self._gt_dir:
                self._gt = load_widerface_gt_mat(self._gt_dir)
            else:
                self._gt = widerface_gt_from_dicts(
                    self._dataset_dicts(), tuple(self._difficulty_by_size)
                )
        return self._gt

    def _dataset_dicts(self) -> List[Dict]:
        """The dataset's dicts, loaded once for the ground truth and the landmark error."""
        if self._dicts is None:
            self._dicts = DatasetCatalog.get(self._dataset_name)
        return self._dicts

    def evaluate(self):
        outputs = self._gathered_outputs()
        if outputs is None:
            return {}
        predictions, keypoints = outputs

        if self._output_dir:
            pred_dir = os.path.join(self._output_dir, PREDICTIONS_DIR)
            write_widerface_predictions(pred_dir, predictions, self._submission_format)
            self._logger.info(f"WIDER FACE submission files written to {pred_dir}")
        if self._submission_format == "released":
            predictions = {k: released_submission_rows(v) for k, v in predictions.items()}

        gt = self.ground_truth()
        warn_unmatched_ids(predictions.keys(), gt)
        missing = [i for i in gt.image_ids if i not in predictions]
        if missing:
            self._logger.warning(
                f"{self._dataset_name}: {len(missing)} of {gt.num_images} ground-truth images have "
                f"no predictions (counted as none), e.g. {', '.join(missing[:3])}"
            )
        start = time.perf_counter()
        metrics, self.pr_curves = widerface_metrics(WiderFaceMatches(predictions, gt))
        self._logger.info(f"WIDER FACE evaluation took {time.perf_counter() - start:.2f} s")

        results = {k: (100.0 * v if k.startswith("AP") else v) for k, v in metrics.items()}
        if keypoints:
            results.update(self._landmark_metrics(predictions, keypoints))
        self._logger.info(
            f"Evaluation results on {self._dataset_name}:\n" + create_small_table(results)
        )
        return OrderedDict({"widerface": results})

    def _landmark_metrics(
        self, predictions: Dict[str, np.ndarray], keypoints: Dict[str, np.ndarray]
    ):
        """NME over the dataset's faces with landmarks; nothing (and a log line) for a dataset without."""
        metrics = dataset_landmark_metrics(self._dataset_dicts(), predictions, keypoints)
        if metrics is None:
            self._logger.info(
                f"{self._dataset_name} has no landmarks: the predicted ones are not scored"
            )
            return {}
        return metrics


def dataset_landmark_metrics(
    dataset_dicts: List[Dict], predictions: Dict[str, np.ndarray], keypoints: Dict[str, np.ndarray]
) -> Optional[Dict[str, float]]:
    """:func:`landmark_metrics` over the faces with ``keypoints`` of ``dataset_dicts``, or None if
    no face has any.

    Args:
        predictions: image_id -> (n, 5) x, y, w, h, score detections.
        keypoints: image_id -> (n, K, 2) their points.
    """
    records = [r for r in dataset_dicts if any("keypoints" in a for a in r.get("annotations", []))]
    if not records:
        return None
    errors, missed = [], 0
    for record in records:
        image_id = str(record["image_id"])
        faces = record["annotations"]
        gt_xyxy = annotation_boxes_xyxy(faces)
        gt_xywh = np.concatenate([gt_xyxy[:, :2], gt_xyxy[:, 2:] - gt_xyxy[:, :2]], axis=1)
        gt_keypoints = np.array(
            [a.get("keypoints", [0.0] * 3 * NUM_LANDMARKS) for a in faces], dtype=np.float64
        )
        image_errors, image_missed = face_landmark_errors(
            predictions.get(image_id, np.zeros((0, 5))),
            keypoints.get(image_id, np.zeros((0, NUM_LANDMARKS, 2))),
            gt_xywh,
            gt_keypoints.reshape(len(faces), -1, 3),
        )
        errors.append(image_errors)
        missed += image_missed
    return landmark_metrics(np.concatenate(errors), missed)
