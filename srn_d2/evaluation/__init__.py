"""Face detection evaluation: the official WIDER FACE protocol (easy / medium /
hard AP and the extra metrics of the SRN analysis), FDDB's discrete ROC and the
AFW / PASCAL faces protocol of face papers, as Detectron2 evaluators and library
functions. The command lines are ``python -m srn_d2.tools.evaluate_widerface``,
``... .evaluate_fddb`` and ``... .evaluate_face_benchmark``.

Names are imported on first use, so that the protocol modules (numpy and
scipy only) load without torch or Detectron2.
"""

import importlib

_EXPORTS = {
    "build_evaluator": "build",
    "FaceBenchmarkEvaluator": "face_benchmark_evaluator",
    "load_benchmark_mat": "face_benchmarks",
    "read_benchmark_detections": "face_benchmarks",
    "evaluate_benchmark": "face_benchmarks",
    "write_benchmark_detections": "face_benchmarks",
    "FDDBEvaluator": "fddb_evaluator",
    "fddb_gt_from_dicts": "fddb_evaluator",
    "FDDBRoc": "fddb_protocol",
    "ellipse_box_overlaps": "fddb_protocol",
    "evaluate_fddb": "fddb_protocol",
    "read_fddb_detections": "prediction_files",
    "read_widerface_prediction_file": "prediction_files",
    "read_widerface_predictions": "prediction_files",
    "write_fddb_detections": "prediction_files",
    "write_widerface_predictions": "prediction_files",
    "WiderFaceEvaluator": "widerface_evaluator",
    "SETTINGS": "widerface_gt",
    "WiderFaceGroundTruth": "widerface_gt",
    "load_widerface_gt_mat": "widerface_gt",
    "widerface_gt_from_dicts": "widerface_gt",
    "plot_pr_curves": "widerface_plot",
    "PRCurve": "widerface_protocol",
    "WiderFaceMatches": "widerface_protocol",
    "evaluate_widerface": "widerface_protocol",
    "match_image": "widerface_protocol",
    "normalize_scores": "widerface_protocol",
    "official_iou": "widerface_protocol",
    "voc_ap": "widerface_protocol",
    "widerface_metrics": "widerface_protocol",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
