"""Face detection evaluation: the official WIDER FACE protocol (easy / medium /
hard AP and the extra metrics of the SRN analysis) and FDDB's discrete ROC, as
Detectron2 evaluators, library functions and command lines
(``python -m srn_d2.evaluation.widerface``, ``python -m srn_d2.evaluation.fddb``).
"""
from .build import build_face_evaluator
from .fddb_evaluator import FDDBEvaluator, fddb_gt_from_dicts
from .fddb_protocol import FDDBRoc, ellipse_box_overlaps, evaluate_fddb
from .prediction_files import (
    read_fddb_detections,
    read_widerface_prediction_file,
    read_widerface_predictions,
    write_fddb_detections,
    write_widerface_predictions,
)
from .widerface_evaluator import WiderFaceEvaluator
from .widerface_gt import (
    SETTINGS,
    WiderFaceGroundTruth,
    load_widerface_gt_mat,
    widerface_gt_from_dicts,
)
from .widerface_plot import plot_pr_curves
from .widerface_protocol import (
    PRCurve,
    WiderFaceMatches,
    evaluate_widerface,
    normalize_scores,
    official_iou,
    voc_ap,
    widerface_metrics,
)

__all__ = [
    "FDDBEvaluator",
    "FDDBRoc",
    "PRCurve",
    "SETTINGS",
    "WiderFaceEvaluator",
    "WiderFaceGroundTruth",
    "WiderFaceMatches",
    "build_face_evaluator",
    "ellipse_box_overlaps",
    "evaluate_fddb",
    "evaluate_widerface",
    "fddb_gt_from_dicts",
    "load_widerface_gt_mat",
    "normalize_scores",
    "official_iou",
    "plot_pr_curves",
    "read_fddb_detections",
    "read_widerface_prediction_file",
    "read_widerface_predictions",
    "voc_ap",
    "widerface_gt_from_dicts",
    "widerface_metrics",
    "write_fddb_detections",
    "write_widerface_predictions",
]
