"""Pick the evaluator of a face dataset from its metadata ``evaluator_type``."""
from typing import Optional

from detectron2.data import MetadataCatalog

from .fddb_evaluator import FDDBEvaluator
from .widerface_evaluator import WiderFaceEvaluator


def build_face_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None):
    """WiderFaceEvaluator (``cfg.TEST.WIDERFACE_GT_DIR`` overriding the .mat folder)
    or FDDBEvaluator, by the dataset's metadata ``evaluator_type``."""
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "widerface")
    if evaluator_type == "widerface":
        return WiderFaceEvaluator.from_config(cfg, dataset_name, output_dir)
    if evaluator_type == "fddb":
        return FDDBEvaluator(dataset_name, output_dir)
    raise ValueError(f"{dataset_name}: no face evaluator for evaluator_type {evaluator_type!r}")
