"""The evaluator of a dataset, from its metadata ``evaluator_type``."""

from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import os
from typing import Optional

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator

from ..errors import InputError
from .face_benchmark_evaluator import FaceBenchmarkEvaluator
from .fddb_evaluator import FDDBEvaluator
from .widerface_evaluator import WiderFaceEvaluator

EVALUATOR_TYPES = ("widerface", "fddb", "face_benchmark", "coco")


def build_evaluator(
    cfg, dataset_name: str, output_folder: Optional[str] = None
) -> DatasetEvaluator:
    """WiderFaceEvaluator, FDDBEvaluator, FaceBenchmarkEvaluator (AFW, PASCAL faces) or
    Detectron2's COCOEvaluator, by the dataset's
    metadata ``evaluator_type``; writes under ``output_folder`` (default:
    ``<OUTPUT_DIR>/inference/<dataset>``)."""
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type == "widerface":
        return WiderFaceEvaluator.from_config(cfg, dataset_name, output_folder)
    if evaluator_type == "fddb":
        return FDDBEvaluator(dataset_name, output_folder)
    if evaluator_type == "face_benchmark":
        return FaceBenchmarkEvaluator(dataset_name, output_folder)
    if evaluator_type == "coco":
        # The fast COCO API needs detectron2's compiled extension, absent in pure-Python installs.
        return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=False)
    raise InputError(
        f"{dataset_name}: no evaluator for metadata evaluator_type {evaluator_type!r}; "
        f"register the dataset with one of {EVALUATOR_TYPES}"
    )
