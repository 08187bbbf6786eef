"""Exporting an SRN config and its weights for deployment: ONNX or TorchScript.

The exported graph is the whole single-scale inference: preprocessing (pixel
normalization), network, STC filter, STR refinement, decoding, NMS, the cap
on detections and Detectron2's clipping to the image. Its input is one image,
``image``: (3, H, W) float32 in INPUT.FORMAT's channel order, any H and W (after
the test-time resize, if INPUT.MIN_SIZE_TEST asks for one). Its outputs are
``boxes`` (N, 4) x1 y1 x2 y2, ``scores`` (N,) and ``classes`` (N,), best first,
and for a model with landmarks (MODEL.SRN.LANDMARKS.ENABLED) ``landmarks``
(N, K, 2): x, y of each detection's points, its ``pred_keypoints`` without the
score column (which repeats the detection's score).

:func:`export` writes ``model.onnx`` (opset 17; its metadata tells
:class:`srn_d2.deploy.onnx_runtime.ONNXFaceDetector` the channel order and the
resize) or ``model.ts`` (TorchScript, with the same facts in ``srn_d2.json``).
Before it returns, the export runs on two image sizes and must give the
PyTorch model's detections: the same count, boxes and landmarks within 0.01 px,
scores within 1e-4; otherwise it raises :class:`ExportError`. Sample images may give
no detection at all (an untrained model, or a face model on noise), which
would verify nothing about the network: its raw outputs (every head map,
before any threshold) are also exported and compared with PyTorch's
(:func:`verify_network`). The file is written beside its target and moved into place
only once verified: a failed export leaves the previous model untouched.

``batched=True`` (``export --batch``) writes ``model_batched.onnx`` / ``.ts``
instead: :class:`srn_d2.deploy.batched.BatchedSRN`, whose inputs are
``images`` (B, 3, H, W) and ``image_sizes`` (B, 2), dynamic in B, H and W, and
whose outputs add ``batch_index`` (N,), the image of each detection (before
``landmarks``, which stays last). It is
verified on the two sample images in one padded batch, against the same
computation in PyTorch, and the unpadded one against the one-image model.
"""
from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import io
import json
import logging
import os
import tempfile
import warnings
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
from detectron2.modeling import build_model

from ..checkpoint import load_inference_weights
from ..errors import ExportError, require
from ..modeling import SRN
from ..utils.file_io import atomic_write, atomic_write_path, check_output_path
from .batched import BatchedSRN
from .onnx_runtime import BATCHED_INTERFACE, INPUT_FORMAT, MAX_SIZE_TEST, MIN_SIZE_TEST, PRECISION, SINGLE_INTERFACE, \
    pad_images, split_by_image, with_landmarks

__all__ = ["FORMATS", "ExportError", "batched_runner", "check_exportable", "deployment_metadata", "export",
           "export_onnx", "export_torchscript", "exported_file", "exported_runner", "traceable", "verify",
           "verify_batched", "verify_network"]

logger = logging.getLogger("srn_d2.export")

FORMATS = ("onnx", "torchscript")
# SRN, and the RetinaNet it is compared with (Detectron2 traces it too).
EXPORTABLE = ("SRN", "RetinaNet")
ONNX_OPSET = 17
BOX_TOLERANCE_PX, SCORE_TOLERANCE = 0.01, 1e-4


def exported_file(export_format: str, batched: bool = False) -> str:
    """The file name an export writes in its output folder."""
    return ("model_batched" if batched else "model") + (".onnx" if export_format == "onnx" else ".ts")


def check_exportable(cfg, batched: bool = False) -> None:
    """ValueError naming the key that keeps ``cfg`` from being exported."""
    require(cfg.MODEL.META_ARCHITECTURE in EXPORTABLE, "MODEL.META_ARCHITECTURE", cfg.MODEL.META_ARCHITECTURE,
            f"the export takes {EXPORTABLE} models")
    if batched:
        require(cfg.MODEL.META_ARCHITECTURE == "SRN", "MODEL.META_ARCHITECTURE", cfg.MODEL.META_ARCHITECTURE,
                "the batched export (--batch) takes SRN models")
        require(cfg.MODEL.SRN.NUM_CLASSES == 1, "MODEL.SRN.NUM_CLASSES", cfg.MODEL.SRN.NUM_CLASSES,
                "the batched export caps each image's detections in NMS order, the score order of one class")
    require(not cfg.TEST.AUG.ENABLED, "TEST.AUG.ENABLED", True,
            "the multi-scale test resizes with OpenCV and votes box by box, outside any graph; "
            "export the single-scale model (TEST.AUG.ENABLED False) and run the passes around it")
    require(cfg.INPUT.FORMAT in ("BGR", "RGB"), "INPUT.FORMAT", cfg.INPUT.FORMAT, "the export takes BGR or RGB input")


def _detections(model, inputs) -> Tuple[torch.Tensor, ...]:
    """(boxes, scores, classes), and (N, K, 2) landmarks from a model with landmarks."""
    instances = model(inputs)[0]["instances"]
    detections = (instances.pred_boxes.tensor, instances.scores, instances.pred_classes)
    if instances.has("pred_keypoints"):
        return (*detections, instances.pred_keypoints[..., :2])
    return detections


def traceable(model) -> torch.nn.Module:
    """The model as a function of one (3, H, W) image tensor, returning (boxes, scores, classes[, landmarks])."""
    with warnings.catch_warnings():
        # As srn_d2.utils.quiet_import: Detectron2's export package scripts code when imported.
        warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
        from detectron2.export import TracingAdapter

    sample = torch.zeros(3, 64, 64, device=model.device)
    # torch.onnx.export restores the module's training flag afterwards: keep it in eval mode.
    return TracingAdapter(model, [{"image": sample}], _detections).eval()


def deployment_metadata(cfg) -> Dict[str, str]:
    """What a runtime needs beside the graph: channel order and test-time resize."""
    return {
        INPUT_FORMAT: cfg.INPUT.FORMAT,
        MIN_SIZE_TEST: str(cfg.INPUT.MIN_SIZE_TEST),
        MAX_SIZE_TEST: str(cfg.INPUT.MAX_SIZE_TEST),
        PRECISION: "fp32",
    }


def _graph(model, batched: bool) -> Tuple[torch.nn.Module, Tuple[Tuple[str, int], ...], Tuple[str, ...]]:
    """The module to trace and its interface: (input name, rank) pairs and output names."""
    interface = BATCHED_INTERFACE if batched else SINGLE_INTERFACE
    if isinstance(model, SRN) and model.num_landmarks:
        interface = with_landmarks(interface)
    return (BatchedSRN(model) if batched else traceable(model)).eval(), *interface


def export_onnx(model, sample: Tuple[torch.Tensor, ...], path: str, metadata: Dict[str, str],
                batched: bool = False) -> None:
    """Write ``path``: the traced model, dynamic in every image dimension, and ``metadata``.

    Args:
        sample: the inputs to trace with: ``(image,)``, or ``(images, image_sizes)`` if ``batched``.
    """
    import onnx

    module, inputs, outputs = _graph(model, batched)
    image_axes = {0: "batch", 2: "height", 3: "width"} if batched else {1: "height", 2: "width"}
    dynamic = {inputs[0][0]: image_axes, **{name: {0: "batch"} for name, _ in inputs[1:]},
               **{name: {0: "detections"} for name in outputs}}
    traced = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            module,
            sample,
            traced,
            opset_version=ONNX_OPSET,
            input_names=[name for name, _ in inputs],
            output_names=list(outputs),
            dynamic_axes=dynamic,
            dynamo=False,
        )
    graph = onnx.load_from_string(traced.getvalue())
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    with atomic_write(path, "wb") as f:
        f.write(graph.SerializeToString())


def export_torchscript(model, sample: Tuple[torch.Tensor, ...], path: str, metadata: Dict[str, str],
                       batched: bool = False) -> None:
    with torch.no_grad():
        scripted = torch.jit.trace(_graph(model, batched)[0], sample, check_trace=False)
    with atomic_write(path, "wb") as f:
        torch.jit.save(scripted, f, _extra_files={"srn_d2.json": json.dumps(metadata)})


def exported_runner(path: str, export_format: str) -> Callable[..., Tuple[np.ndarray, ...]]:
    """The exported file as a function of numpy inputs, in the graph's order, to numpy outputs:
    a (3, H, W) float32 image -> (boxes, scores, classes[, landmarks]), or, batched, (images,
    image_sizes) -> (boxes, scores, classes, batch_index[, landmarks])."""
    if export_format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return lambda *inputs: tuple(session.run(None, dict(zip(names, inputs))))
    module = torch.jit.load(path)

    def run(*inputs):
        with torch.no_grad():
            return tuple(t.numpy() for t in module(*(torch.from_numpy(x) for x in inputs)))

    return run


def batched_runner(path: str, export_format: str) -> Callable[[List[np.ndarray]], List[Tuple[np.ndarray, ...]]]:
    """(3, H_i, W_i) float32 images -> each one's (boxes, scores, classes[, landmarks]), from one
    call of the batched export on the images padded together."""
    run = exported_runner(path, export_format)

    def run_batch(images):
        return _per_image(run(*pad_images(images)), len(images))

    return run_batch


def verify(model, run_exported, image: torch.Tensor) -> Dict[str, float]:
    """Compare the exported model with ``model`` on one image; ExportError on any difference.

    Detections are paired one to one (order may differ between equal scores).
    Returns the count and the largest box and score differences.
    """
    with torch.no_grad():
        expected = [t.cpu().numpy() for t in _detections(model, [{"image": image}])]
    return _compare(expected, run_exported(image.cpu().numpy()), tuple(image.shape[-2:]))


def verify_batched(model, run_batch, images: Tuple[torch.Tensor, ...]) -> Dict[str, float]:
    """Compare the batched export with PyTorch on ``images`` padded into one batch, the first
    of them the largest: every image against :class:`BatchedSRN` in PyTorch, and the first,
    which no padding changes, against the one-image model. ExportError on any difference."""
    arrays = [image.cpu().numpy() for image in images]
    batch, sizes = pad_images(arrays)
    require(tuple(sizes[0]) == batch.shape[2:], "verify_batched", sizes.tolist(),
            "the first image must be the largest, the one left unpadded")
    got = run_batch(arrays)
    with torch.no_grad():
        expected = _per_image([t.cpu().numpy() for t in BatchedSRN(model).eval()(
            torch.from_numpy(batch).to(model.device), torch.from_numpy(sizes).to(model.device))], len(images))
    report = {}
    for i, image in enumerate(images):
        report[f"image {i}"] = _compare(expected[i], got[i], tuple(image.shape[-2:]))
    with torch.no_grad():
        alone = [t.cpu().numpy() for t in _detections(model, [{"image": images[0]}])]
    report["image 0 alone"] = _compare(alone, got[0], tuple(images[0].shape[-2:]))
    return report


def _per_image(outputs, count: int) -> List[Tuple[np.ndarray, ...]]:
    """The batched graph's outputs -> each image's (boxes, scores, classes[, landmarks])."""
    return split_by_image((*outputs[:3], *outputs[4:]), outputs[3], count)


def _compare(expected, got, size) -> Dict[str, float]:
    """(boxes, scores, classes[, landmarks]) of one image, expected and exported: ExportError on
    any difference."""
    from scipy.optimize import linear_sum_assignment

    if len(got) != len(expected):
        raise ExportError(f"{size} px: the export gives {len(got)} outputs, PyTorch {len(expected)}")
    if len(got[0]) != len(expected[0]):
        raise ExportError(f"{size} px: the export gives {len(got[0])} detections, PyTorch {len(expected[0])}")
    box_diff = score_diff = landmark_diff = 0.0
    if len(expected[0]):
        cost = np.abs(expected[0][:, None] - got[0][None]).max(-1) + 1e3 * np.abs(expected[1][:, None] - got[1][None])
        rows, cols = linear_sum_assignment(cost)
        box_diff = float(np.abs(expected[0][rows] - got[0][cols]).max())
        score_diff = float(np.abs(expected[1][rows] - got[1][cols]).max())
        if not np.array_equal(expected[2][rows], got[2][cols]):
            raise ExportError(f"{size} px: classes differ from PyTorch's")
        if len(expected) > 3:
            landmark_diff = float(np.abs(expected[3][rows] - got[3][cols]).max())
    if box_diff > BOX_TOLERANCE_PX or score_diff > SCORE_TOLERANCE or landmark_diff > BOX_TOLERANCE_PX:
        raise ExportError(f"{size} px: boxes differ by up to {box_diff:.4f} px, scores by {score_diff:.2e}, "
                          f"landmarks by {landmark_diff:.4f} px")
    report = {"detections": len(expected[0]), "box_diff_px": box_diff, "score_diff": score_diff}
    if len(expected) > 3:
        report["landmark_diff_px"] = landmark_diff
    return report


def _sample_images(device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two images of different, odd sizes: the export must not depend on the traced size."""
    generator = torch.Generator().manual_seed(0)
    return tuple(
        torch.randint(0, 256, (3, h, w), generator=generator).float().to(device) for h, w in ((241, 321), (193, 157))
    )


def export(cfg, export_format: str, output_dir: str, allow_random_weights: bool = False,
           batched: bool = False) -> str:
    """Export ``cfg``'s model with its MODEL.WEIGHTS; returns the written file
    (``model.onnx`` / ``model.ts``, or ``model_batched.*`` if ``batched``)."""
    require(export_format in FORMATS, "--format", export_format, f"must be one of {FORMATS}")
    check_exportable(cfg, batched)
    model = build_model(cfg).eval()
    load_inference_weights(model, cfg.MODEL.WEIGHTS, allow_random=allow_random_weights)
    metadata = deployment_metadata(cfg)
    path = check_output_path(os.path.join(output_dir, exported_file(export_format, batched)))
    samples = _sample_images(model.device)
    sample = tuple(torch.from_numpy(x).to(model.device) for x in pad_images([s.cpu().numpy() for s in samples])) \
        if batched else samples[:1]
    with atomic_write_path(path) as temporary:
        with warnings.catch_warnings():
            # Detectron2's Boxes and NMS check shapes in Python while traced; the checks
            # below compare the export with PyTorch on two sizes instead.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            (export_onnx if export_format == "onnx" else export_torchscript)(model, sample, temporary, metadata,
                                                                             batched)
        if batched:
            logger.info(f"{[tuple(s.shape[-2:]) for s in samples]} px in one batch: "
                        f"{verify_batched(model, batched_runner(temporary, export_format), samples)}")
        else:
            run_exported = exported_runner(temporary, export_format)
            for image in samples:
                logger.info(f"{tuple(image.shape[-2:])} px: {verify(model, run_exported, image)}")
        logger.info(f"network outputs: {verify_network(model, export_format, samples)}")
    logger.info(f"wrote {path}")
    return path


class _NetworkOutputs(torch.nn.Module):
    """The network alone: one (3, H, W) image -> every map its head outputs, in a fixed order."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        features = self.model.backbone(self.model.preprocess_image([{"image": image}]).tensor)
        if isinstance(self.model, SRN):
            outputs = self.model.head(features)
        else:  # Detectron2's dense detectors' heads take a list
            outputs = self.model.head([features[f] for f in self.model.head_in_features])
        return tuple(_tensors(outputs))


def _tensors(value) -> List[torch.Tensor]:
    if value is None:  # an output the model does not have (step-2 landmarks when off)
        return []
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for key in sorted(value) for t in _tensors(value[key])]
    return [t for item in value for t in _tensors(item)]


def verify_network(model, export_format: str, samples: Tuple[torch.Tensor, ...]) -> Dict[str, float]:
    """Export the network alone (no threshold, no NMS) and compare its outputs with PyTorch's on
    each sample: ExportError beyond 1e-3 relative to the largest value. Unlike the detections,
    these exist whatever the weights and the image, so this check always compares something."""
    network = _NetworkOutputs(model).eval()
    with tempfile.TemporaryDirectory(prefix="srn_d2-verify-") as folder, torch.no_grad(), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        path = os.path.join(folder, "network")
        if export_format == "onnx":
            names = [f"output{i}" for i in range(len(network(samples[0])))]
            torch.onnx.export(network, (samples[0],), path, opset_version=ONNX_OPSET, input_names=["image"],
                              output_names=names, dynamic_axes={"image": {1: "height", 2: "width"}}, dynamo=False)
        else:
            torch.jit.save(torch.jit.trace(network, (samples[0],), check_trace=False), path)
        run_exported = exported_runner(path, export_format)
        largest = 0.0
        for image in samples:
            expected = [t.cpu().numpy() for t in network(image)]
            got = run_exported(image.cpu().numpy())
            size = tuple(image.shape[-2:])
            if [e.shape for e in expected] != [g.shape for g in got]:
                raise ExportError(f"{size} px: the exported network's output shapes differ from PyTorch's")
            scale = max(1.0, max(float(np.abs(e).max(initial=0.0)) for e in expected))
            diff = max(float(np.abs(e - g).max(initial=0.0)) for e, g in zip(expected, got)) / scale
            if not diff <= 1e-3:
                raise ExportError(f"{size} px: the exported network's outputs differ from PyTorch's by {diff:.2e} "
                                  "(relative to the largest)")
            largest = max(largest, diff)
    return {"outputs": len(expected), "relative_diff": largest}
