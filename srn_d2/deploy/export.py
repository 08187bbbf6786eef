"""Exporting an SRN config and its weights for deployment: ONNX or TorchScript.

The exported graph is the whole single-scale inference: preprocessing (pixel
normalization), network, STC filter, STR refinement, decoding, NMS, the cap
on detections and Detectron2's clipping to the image. Its input is one image,
``image``: (3, H, W) float32 in INPUT.FORMAT's channel order, any H and W (after
the test-time resize, if INPUT.MIN_SIZE_TEST asks for one). Its outputs are
``boxes`` (N, 4) x1 y1 x2 y2, ``scores`` (N,) and ``classes`` (N,), best first.

:func:`export` writes ``model.onnx`` (opset 17; its metadata tells
:class:`srn_d2.deploy.onnx_runtime.ONNXFaceDetector` the channel order and the
resize) or ``model.ts`` (TorchScript, with the same facts in ``srn_d2.json``).
Before it returns, the export runs on two image sizes and must give the
PyTorch model's detections: the same count, boxes within 0.01 px, scores
within 1e-4; otherwise it raises :class:`ExportError`.
"""
from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import json
import logging
import os
import warnings
from typing import Callable, Dict, Tuple

import numpy as np
import torch
from detectron2.modeling import build_model

from ..checkpoint import load_inference_weights
from ..errors import ExportError, require
from .onnx_runtime import INPUT_FORMAT, MAX_SIZE_TEST, MIN_SIZE_TEST

__all__ = ["FORMATS", "ExportError", "check_exportable", "deployment_metadata", "export", "export_onnx",
           "export_torchscript", "exported_runner", "traceable", "verify"]

logger = logging.getLogger("srn_d2.export")

FORMATS = ("onnx", "torchscript")
# SRN, and the RetinaNet it is compared with (Detectron2 traces it too).
EXPORTABLE = ("SRN", "RetinaNet")
ONNX_OPSET = 17
OUTPUTS = ("boxes", "scores", "classes")
BOX_TOLERANCE_PX, SCORE_TOLERANCE = 0.01, 1e-4


def check_exportable(cfg) -> None:
    """ValueError naming the key that keeps ``cfg`` from being exported."""
    require(cfg.MODEL.META_ARCHITECTURE in EXPORTABLE, "MODEL.META_ARCHITECTURE", cfg.MODEL.META_ARCHITECTURE,
            f"the export takes {EXPORTABLE} models")
    require(not cfg.TEST.AUG.ENABLED, "TEST.AUG.ENABLED", True,
            "the multi-scale test resizes with OpenCV and votes box by box, outside any graph; "
            "export the single-scale model (TEST.AUG.ENABLED False) and run the passes around it")
    require(cfg.INPUT.FORMAT in ("BGR", "RGB"), "INPUT.FORMAT", cfg.INPUT.FORMAT, "the export takes BGR or RGB input")


def _detections(model, inputs) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    instances = model(inputs)[0]["instances"]
    return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


def traceable(model) -> torch.nn.Module:
    """The model as a function of one (3, H, W) image tensor, returning (boxes, scores, classes)."""
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
    }


def export_onnx(model, sample: torch.Tensor, path: str, metadata: Dict[str, str]) -> None:
    """Write ``path``: the traced model with dynamic height and width, and ``metadata``."""
    import onnx

    dynamic = {"image": {1: "height", 2: "width"}, **{name: {0: "detections"} for name in OUTPUTS}}
    with torch.no_grad():
        torch.onnx.export(
            traceable(model),
            (sample,),
            path,
            opset_version=ONNX_OPSET,
            input_names=["image"],
            output_names=list(OUTPUTS),
            dynamic_axes=dynamic,
            dynamo=False,
        )
    graph = onnx.load(path)
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, path)


def export_torchscript(model, sample: torch.Tensor, path: str, metadata: Dict[str, str]) -> None:
    with torch.no_grad():
        scripted = torch.jit.trace(traceable(model), (sample,), check_trace=False)
    torch.jit.save(scripted, path, _extra_files={"srn_d2.json": json.dumps(metadata)})


def exported_runner(path: str, export_format: str) -> Callable[[np.ndarray], Tuple[np.ndarray, ...]]:
    """(3, H, W) float32 image -> (boxes, scores, classes) numpy arrays, from the exported file."""
    if export_format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return lambda image: tuple(session.run(None, {"image": image}))
    module = torch.jit.load(path)

    def run(image):
        with torch.no_grad():
            return tuple(t.numpy() for t in module(torch.from_numpy(image)))

    return run


def verify(model, run_exported, image: torch.Tensor) -> Dict[str, float]:
    """Compare the exported model with ``model`` on one image; ExportError on any difference.

    Detections are paired one to one (order may differ between equal scores).
    Returns the count and the largest box and score differences.
    """
    from scipy.optimize import linear_sum_assignment

    with torch.no_grad():
        expected = [t.cpu().numpy() for t in _detections(model, [{"image": image}])]
    got = run_exported(image.cpu().numpy())
    size = tuple(image.shape[-2:])
    if len(got[0]) != len(expected[0]):
        raise ExportError(f"{size} px: the export gives {len(got[0])} detections, PyTorch {len(expected[0])}")
    box_diff = score_diff = 0.0
    if len(expected[0]):
        cost = np.abs(expected[0][:, None] - got[0][None]).max(-1) + 1e3 * np.abs(expected[1][:, None] - got[1][None])
        rows, cols = linear_sum_assignment(cost)
        box_diff = float(np.abs(expected[0][rows] - got[0][cols]).max())
        score_diff = float(np.abs(expected[1][rows] - got[1][cols]).max())
        if not np.array_equal(expected[2][rows], got[2][cols]):
            raise ExportError(f"{size} px: classes differ from PyTorch's")
    if box_diff > BOX_TOLERANCE_PX or score_diff > SCORE_TOLERANCE:
        raise ExportError(f"{size} px: boxes differ by up to {box_diff:.4f} px, scores by {score_diff:.2e}")
    return {"detections": len(expected[0]), "box_diff_px": box_diff, "score_diff": score_diff}


def _sample_images(device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two images of different, odd sizes: the export must not depend on the traced size."""
    generator = torch.Generator().manual_seed(0)
    return tuple(
        torch.randint(0, 256, (3, h, w), generator=generator).float().to(device) for h, w in ((241, 321), (193, 157))
    )


def export(cfg, export_format: str, output_dir: str, allow_random_weights: bool = False) -> str:
    """Export ``cfg``'s model with its MODEL.WEIGHTS; returns the written file."""
    require(export_format in FORMATS, "--format", export_format, f"must be one of {FORMATS}")
    check_exportable(cfg)
    model = build_model(cfg).eval()
    load_inference_weights(model, cfg.MODEL.WEIGHTS, allow_random=allow_random_weights)
    metadata = deployment_metadata(cfg)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "model.onnx" if export_format == "onnx" else "model.ts")
    traced_on, other = _sample_images(model.device)
    with warnings.catch_warnings():
        # Detectron2's Boxes and NMS check shapes in Python while traced; the checks below
        # compare the export with PyTorch on two sizes instead.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        (export_onnx if export_format == "onnx" else export_torchscript)(model, traced_on, path, metadata)
    run_exported = exported_runner(path, export_format)
    for image in (traced_on, other):
        logger.info(f"{tuple(image.shape[-2:])} px: {verify(model, run_exported, image)}")
    logger.info(f"wrote {path}")
    return path
