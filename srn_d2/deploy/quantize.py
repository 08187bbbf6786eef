"""int8 SRN: onnxruntime's static quantization of an exported model, calibrated on a
registered dataset's images through the model's own preprocessing.

By default only the convolutions are quantized (QDQ, int8 weights per output channel,
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
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import require
from ..utils.file_io import atomic_write, atomic_write_path, partial_prefix
from .onnx_runtime import (
    EXPORT_ID,
    PRECISION,
    SINGLE_INTERFACE,
    Detections,
    ONNXFaceDetector,
    graph_inputs,
)

__all__ = [
    "PRECISION",
    "SCOPES",
    "calibration_images",
    "compare_precisions",
    "detection_agreement",
    "int8_path",
    "quantize_int8",
]

logger = logging.getLogger("srn_d2.export")

# What quantize_int8 quantizes: "conv", the convolutions, where the multiply-adds are (the
# default, module docstring), or "network", every float operator of the network of these types.
SCOPES = ("conv", "network")
NETWORK_OPS = (
    "Conv",
    "Add",
    "Mul",
    "Relu",
    "Concat",
    "Resize",
    "MaxPool",
    "AveragePool",
    "HardSigmoid",
    "HardSwish",
    "GlobalAveragePool",
    "Sigmoid",
)
# Weight precisions quantize_int8 writes (7: onnxruntime's reduce_range).
WEIGHT_BITS = (8, 7)
# A fp32 detection at least this confident must be found again by the int8 model, at this IoU.
COMPARED_SCORE, MATCHING_IOU = 0.5, 0.9


def calibration_images(cfg, dataset_name: str, count: int) -> List[np.ndarray]:
    """The first ``count`` images of ``dataset_name`` as the exported graph takes them:
    (3, H, W) float32 after the model's test-time preprocessing (SRNDatasetMapper, is_train=False)."""
    from detectron2.data import DatasetCatalog

    from ..data.builtin import require_registered_dataset
    from ..data.dataset_mapper import SRNDatasetMapper

    require(count >= 1, "--calibration-images", count, "must be at least 1")
    require_registered_dataset(dataset_name, "--calibration-dataset")
    if dataset_name.endswith(("_val", "_test")) or dataset_name in cfg.DATASETS.TEST:
        logger.warning(
            f"--calibration-dataset {dataset_name} is an evaluation set: int8 ranges fitted to it make "
            "its scores optimistic; calibrate on training images (e.g. widerface_train)"
        )
    mapper = SRNDatasetMapper(cfg, is_train=False)
    records = DatasetCatalog.get(dataset_name)[:count]
    require(len(records) > 0, "--calibration-dataset", dataset_name, "holds no image")
    return [mapper(record)["image"].numpy().astype(np.float32) for record in records]


def int8_path(fp32_path: str) -> str:
    """Where the int8 twin of an exported model goes: ``model.onnx`` -> ``model_int8.onnx``."""
    stem, extension = os.path.splitext(fp32_path)
    return f"{stem}_int8{extension}"


class _Images:
    """onnxruntime's CalibrationDataReader over a list of images, one per call of the graph."""

    def __init__(self, images: Sequence[np.ndarray], batched: bool):
        self._images = iter(images)
        self._batched = batched

    def get_next(self):
        image = next(self._images, None)
        return None if image is None else graph_inputs([image], self._batched)


def quantize_int8(
    fp32_path: str,
    images: Sequence[np.ndarray],
    scope: str = "conv",
    output_path: Optional[str] = None,
    weight_bits: int = 8,
) -> Dict[str, float]:
    """Write the int8 twin of ``fp32_path`` (at ``output_path``, default :func:`int8_path`),
    calibrated on ``images``; return :func:`compare_precisions` on them.

    Args:
        scope: "conv": the convolutions alone; "network": every float operator of the
            network (:data:`NETWORK_OPS`: the additions and upsampling of the pyramid,
            RFE's concatenations, ...) as well, for ``benchmarks/benchmark_deploy_accuracy.py``
            to measure against. What follows the head stays fp32 in both.
        weight_bits: 8, or 7 (onnxruntime's ``reduce_range``): CPUs without AVX-512
            VNNI multiply uint8 by int8 with 16-bit saturating sums (AVX2's
            ``vpmaddubsw``), which two full-range products can overflow; 7-bit
            weights cannot.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    require(scope in SCOPES, "scope", scope, f"must be one of {SCOPES}")
    require(
        weight_bits in WEIGHT_BITS,
        "--int8-weight-bits",
        weight_bits,
        f"must be one of {WEIGHT_BITS}",
    )
    target = output_path or int8_path(fp32_path)
    # The working folder beside the target, named as its partial files are: a killed run's is removed
    # by the next write of the target (srn_d2.utils.file_io.remove_abandoned_partials).
    with (
        atomic_write_path(target) as temporary,
        tempfile.TemporaryDirectory(
            prefix=partial_prefix(target),
            suffix=".partial",
            dir=os.path.dirname(os.path.abspath(target)),
        ) as folder,
    ):
        prepared = _prepared_for_quantization(fp32_path, folder)
        fp32_graph = onnx.load(prepared).graph
        input_names = [i.name for i in fp32_graph.input]
        batched = tuple(input_names) != tuple(name for name, _ in SINGLE_INTERFACE[0])
        reader = type("Images", (_Images, CalibrationDataReader), {})(images, batched)
        # The ranges are measured on the network alone, the subgraph from the image to the
        # last convolution: the calibrator would otherwise also reduce the tensors of the
        # decoding, which are empty on an image without candidates.
        network = os.path.join(folder, "network.onnx")
        convolutions = [node.output[0] for node in fp32_graph.node if node.op_type == "Conv"]
        onnx.utils.extract_model(
            prepared, network, input_names=input_names, output_names=convolutions
        )
        nodes = _nodes_to_quantize(network, scope)
        calibrated = [node.output[0] for node in nodes]
        if calibrated != convolutions:  # "network": calibrate every tensor it quantizes
            onnx.utils.extract_model(
                prepared, network, input_names=input_names, output_names=calibrated
            )
        options = dict(
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=sorted({n.op_type for n in nodes}),
            nodes_to_quantize=[n.name for n in nodes],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=weight_bits == 7,
        )
        ranges = os.path.join(folder, "ranges.json")
        quantize_static(
            network,
            os.path.join(folder, "network_int8.onnx"),
            reader,
            calibration_cache_path=ranges,
            **options,
        )
        quantized = os.path.join(folder, "model_int8.onnx")
        quantize_static(prepared, quantized, None, calibration_cache_path=ranges, **options)
        graph = onnx.load(quantized)
        _set_metadata(graph, PRECISION, "int8")
        # The twin carries its fp32 model's export id (onnxruntime's passes need not keep metadata).
        fp32_id = {p.key: p.value for p in onnx.load(fp32_path).metadata_props}.get(EXPORT_ID)
        if fp32_id is not None:
            _set_metadata(graph, EXPORT_ID, fp32_id)
        with atomic_write(temporary, "wb") as f:
            f.write(graph.SerializeToString())
        report = compare_precisions(fp32_path, temporary, images)
    logger.info(f"wrote {target}")
    return report


def _prepared_for_quantization(fp32_path: str, folder: str) -> str:
    """The fp32 model with onnxruntime's basic graph optimizations applied, written in ``folder``.

    The export keeps each frozen BatchNorm as a Mul and an Add after its
    convolution. Quantized as they stand, every convolution is followed by
    fp32 arithmetic that onnxruntime cannot fold into an int8 convolution, so
    the quantized graph ran slower than fp32 (SRN R-50 at 640 px, one core: 1.18x
    fp32's time); folded first, the int8 convolutions take 0.29x of it.
    The symbolic shape inference of the same preprocessing is skipped: it cannot
    follow the candidate counts of the decoding, which depend on the image's scores.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = os.path.join(folder, "prepared.onnx")
    quant_pre_process(fp32_path, prepared, skip_symbolic_shape=True)
    return prepared


def _nodes_to_quantize(network_path: str, scope: str) -> List:
    """The nodes of the network subgraph that ``scope`` quantizes: float operators only (shape
    arithmetic uses Add and Mul on integers too)."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(onnx.load(network_path)).graph
    floats = {
        v.name
        for v in (*graph.value_info, *graph.output)
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    }
    kinds = ("Conv",) if scope == "conv" else NETWORK_OPS
    return [node for node in graph.node if node.op_type in kinds and node.output[0] in floats]


def _set_metadata(graph, key: str, value: str) -> None:
    for prop in graph.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    graph.metadata_props.add(key=key, value=value)


def detection_agreement(
    reference: Sequence[Detections], other: Sequence[Detections]
) -> Dict[str, float]:
    """How far ``other`` reproduces ``reference``, image by image, each a list of (boxes, scores)
    or (boxes, scores, landmarks): how many reference detections scoring >= 0.5 have a detection
    of ``other`` at IoU >= 0.9 (and by how much their scores, and their landmarks, in units of
    the reference box's sqrt(w * h) as the landmark error counts them, moved), and the two counts."""
    confident = found = reference_total = other_total = 0
    largest_score_change = largest_landmark_shift = 0.0
    for (boxes_a, scores_a, *points_a), (boxes_b, scores_b, *points_b) in zip(reference, other):
        reference_total, other_total = reference_total + len(scores_a), other_total + len(scores_b)
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
            if matched.any() and points_a:
                boxes = boxes_a[keep][matched]
                sizes = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
                shift = np.linalg.norm(
                    points_a[0][keep][matched] - points_b[0][best[matched]], axis=-1
                ).max(axis=1)
                largest_landmark_shift = max(largest_landmark_shift, float((shift / sizes).max()))
    report = {
        "images": len(reference),
        "reference_detections": reference_total,
        "other_detections": other_total,
        "reference_confident": confident,
        "found_again": found,
        "largest_score_change": largest_score_change,
    }
    if reference and len(reference[0]) > 2:
        report["largest_landmark_shift"] = largest_landmark_shift
    return report


def compare_precisions(
    fp32_path: str, quantized_path: str, images: Sequence[np.ndarray]
) -> Dict[str, float]:
    """:func:`detection_agreement` of the int8 model with the fp32 model on ``images``, logged."""
    fp32, int8 = ONNXFaceDetector(fp32_path), ONNXFaceDetector(quantized_path)
    report = detection_agreement(
        [fp32.run_graph([image])[0] for image in images],
        [int8.run_graph([image])[0] for image in images],
    )
    logger.info(
        f"int8 against fp32 on {len(images)} calibration images: {report['found_again']} of "
        f"{report['reference_confident']} fp32 detections scoring >= {COMPARED_SCORE} found again at IoU >= "
        f"{MATCHING_IOU} (their scores moved by at most {report['largest_score_change']:.3f}); "
        f"{report['other_detections']} int8 detections against {report['reference_detections']} fp32"
        + (
            f"; their landmarks moved by at most {report['largest_landmark_shift']:.3f} of the face's size"
            if "largest_landmark_shift" in report
            else ""
        )
    )
    return report


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import torch
    from torchvision.ops import box_iou

    return box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
