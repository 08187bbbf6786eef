"""int8 SRN: onnxruntime's static quantization of an exported model, calibrated on a
registered dataset's images through the model's own preprocessing.

Only the convolutions are quantized (QDQ, int8 weights per output channel,
uint8 activations; onnxruntime then runs them with the CPU's int8 dot products,
AVX-512 VNNI where present). Everything after the head stays fp32: the sigmoid
and the STC threshold, the refinement and decoding of boxes, the score filter,
top-k and NMS. Those make yes/no decisions on values near their thresholds,
and the convolutions are where the multiply-adds are; quantizing the rest would
buy no speed and let rounding flip decisions.

:func:`quantize_int8` writes ``model_int8.onnx`` beside the fp32 model (atomically)
and returns the comparison of the two on the calibration images, which the
export command prints before it returns: an int8 model never ships with an
accuracy cost nobody looked at.
"""
from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import logging
import os
import tempfile
from typing import Dict, List, Sequence

import numpy as np

from ..errors import require
from ..utils.file_io import atomic_write, atomic_write_path
from .onnx_runtime import PRECISION

__all__ = ["PRECISION", "INT8_FILE", "calibration_images", "quantize_int8", "compare_precisions"]

logger = logging.getLogger("srn_d2.export")

INT8_FILE = "model_int8.onnx"
# A fp32 detection at least this confident must be found again by the int8 model, at this IoU.
COMPARED_SCORE, MATCHING_IOU = 0.5, 0.9


def calibration_images(cfg, dataset_name: str, count: int) -> List[np.ndarray]:
    """The first ``count`` images of ``dataset_name`` as the exported graph takes them:
    (3, H, W) float32 after the model's test-time preprocessing (SRNDatasetMapper, is_train=False)."""
    from detectron2.data import DatasetCatalog

    from ..data.dataset_mapper import SRNDatasetMapper

    require(count >= 1, "--calibration-images", count, "must be at least 1")
    require(dataset_name in DatasetCatalog.list(), "--calibration-dataset", dataset_name,
            "is not a registered dataset (see datasets/README.md)")
    mapper = SRNDatasetMapper(cfg, is_train=False)
    records = DatasetCatalog.get(dataset_name)[:count]
    require(len(records) > 0, "--calibration-dataset", dataset_name, "holds no image")
    return [mapper(record)["image"].numpy().astype(np.float32) for record in records]


class _Images:
    """onnxruntime's CalibrationDataReader over a list of images."""

    def __init__(self, images: Sequence[np.ndarray]):
        self._images = iter(images)

    def get_next(self):
        image = next(self._images, None)
        return None if image is None else {"image": image}


def quantize_int8(fp32_path: str, images: Sequence[np.ndarray]) -> Dict[str, float]:
    """Write the int8 twin of ``fp32_path`` (``model_int8.onnx`` beside it), calibrated on
    ``images``; return :func:`compare_precisions` on them."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    reader = type("Images", (_Images, CalibrationDataReader), {})(images)
    int8_path = os.path.join(os.path.dirname(fp32_path), INT8_FILE)
    options = dict(quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"], per_channel=True,
                   activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    with atomic_write_path(int8_path) as temporary, tempfile.TemporaryDirectory(prefix="srn_d2-int8-") as folder:
        # The ranges are measured on the network alone (every convolution, nothing after):
        # onnxruntime calibrates without graph optimizations, and unoptimized, the decoding
        # fails on an image whose every candidate falls below the score threshold.
        network = os.path.join(folder, "network.onnx")
        convolutions = [node.output[0] for node in onnx.load(fp32_path).graph.node if node.op_type == "Conv"]
        onnx.utils.extract_model(fp32_path, network, input_names=["image"], output_names=convolutions)
        ranges = os.path.join(folder, "ranges.json")
        quantize_static(network, os.path.join(folder, "network_int8.onnx"), reader, calibration_cache_path=ranges,
                        **options)
        quantize_static(fp32_path, temporary, None, calibration_cache_path=ranges, **options)
        graph = onnx.load(temporary)
        _set_metadata(graph, PRECISION, "int8")
        with atomic_write(temporary, "wb") as f:
            f.write(graph.SerializeToString())
        report = compare_precisions(fp32_path, temporary, images)
    logger.info(f"wrote {int8_path}")
    return report


def _set_metadata(graph, key: str, value: str) -> None:
    for prop in graph.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    graph.metadata_props.add(key=key, value=value)


def compare_precisions(fp32_path: str, int8_path: str, images: Sequence[np.ndarray]) -> Dict[str, float]:
    """The int8 model's detections against the fp32 model's on ``images``: how many fp32
    detections scoring >= 0.5 the int8 model finds again at IoU >= 0.9, and the counts."""
    from .export import exported_runner

    fp32, int8 = exported_runner(fp32_path, "onnx"), exported_runner(int8_path, "onnx")
    confident = found = fp32_total = int8_total = 0
    largest_score_change = 0.0
    for image in images:
        boxes_a, scores_a, _ = fp32(image)
        boxes_b, scores_b, _ = int8(image)
        fp32_total, int8_total = fp32_total + len(scores_a), int8_total + len(scores_b)
        keep = scores_a >= COMPARED_SCORE
        confident += int(keep.sum())
        if keep.any() and len(boxes_b):
            iou = _iou(boxes_a[keep], boxes_b)
            best = iou.argmax(axis=1)
            matched = iou[np.arange(len(best)), best] >= MATCHING_IOU
            found += int(matched.sum())
            if matched.any():
                change = np.abs(scores_a[keep][matched] - scores_b[best[matched]]).max()
                largest_score_change = max(largest_score_change, float(change))
    report = {
        "images": len(images),
        "fp32_detections": fp32_total,
        "int8_detections": int8_total,
        "fp32_confident": confident,
        "int8_found_again": found,
        "largest_score_change": largest_score_change,
    }
    logger.info(f"int8 against fp32 on {len(images)} calibration images: {found} of {confident} fp32 detections "
                f"scoring >= {COMPARED_SCORE} found again at IoU >= {MATCHING_IOU} (their scores moved by at most "
                f"{largest_score_change:.3f}); {int8_total} int8 detections against {fp32_total} fp32")
    return report


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import torch
    from torchvision.ops import box_iou

    return box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
