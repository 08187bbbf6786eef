"""What the face evaluators share: each image's detections as ``x, y, w, h, score``
rows, collected from every process as Detectron2's evaluators do."""

import logging
from typing import Dict, Optional, Tuple

import numpy as np
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

__all__ = ["FaceDetectionEvaluator", "boxes_to_xywhs", "instances_to_xywhs"]


def instances_to_xywhs(instances) -> np.ndarray:
    """(n, 5) float64 ``x, y, w, h, score`` of Detectron2 Instances (XYXY pred_boxes)."""
    return boxes_to_xywhs(
        instances.pred_boxes.tensor.detach().cpu().numpy(), instances.scores.detach().cpu().numpy()
    )


def boxes_to_xywhs(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(n, 4) x1 y1 x2 y2 boxes and (n,) scores -> (n, 5) float64 ``x, y, w, h, score``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2], scores], axis=1)


class FaceDetectionEvaluator(DatasetEvaluator):
    """Keeps ``{image_id: (n, 5) x, y, w, h, score}`` and, for models that output
    ``pred_keypoints``, ``{image_id: (n, K, 2) points}``; subclasses score them in :meth:`evaluate`."""

    def __init__(
        self, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True
    ):
        """
        Args:
            dataset_name: a registered dataset whose dicts have an ``image_id``.
            output_dir: where the evaluator writes its detection files, if set.
            distributed: gather the predictions of all processes and evaluate on the main one.
        """
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._logger = logging.getLogger(type(self).__module__)
        self.reset()

    def reset(self):
        self._predictions: Dict[str, np.ndarray] = {}
        self._keypoints: Dict[str, np.ndarray] = {}

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            instances = out["instances"].to("cpu")
            self._predictions[str(inp["image_id"])] = instances_to_xywhs(instances)
            if instances.has("pred_keypoints"):
                self._keypoints[str(inp["image_id"])] = (
                    instances.pred_keypoints[..., :2].numpy().astype(np.float64)
                )

    def _gathered_predictions(self) -> Optional[Dict[str, np.ndarray]]:
        """All processes' predictions merged on the main process; None on the others."""
        outputs = self._gathered_outputs()
        return None if outputs is None else outputs[0]

    def _gathered_outputs(self) -> Optional[Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]]:
        """All processes' (predictions, predicted points) merged on the main process, in one
        gather that every process joins; None on the others."""
        if not self._distributed:
            return self._predictions, self._keypoints
        comm.synchronize()
        gathered = comm.gather((self._predictions, self._keypoints), dst=0)
        if not comm.is_main_process():
            return None
        return (
            {k: v for predictions, _ in gathered for k, v in predictions.items()},
            {k: v for _, keypoints in gathered for k, v in keypoints.items()},
        )
