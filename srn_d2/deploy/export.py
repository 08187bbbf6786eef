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
PyTorch model's detections, compared as sets (:func:`_compare`): boxes and landmarks
within 0.01 px, scores within 1e-4, and any detection without a counterpart one the
post-processing could decide either way (at the score threshold, at the cap, or an
NMS tie); otherwise it raises :class:`ExportError`. The export always runs on the CPU
(:func:`on_cpu`). Sample images may give
no detection at all (an untrained model, or a face model on noise), which
would verify nothing about the network: its raw outputs (every head map,
before any threshold) are also exported and compared with PyTorch's
(:func:`verify_network`). The file is written beside its target and moved into place
only once verified: a failed export leaves the previous model untouched.

The ONNX graph computes RFE blocks with narrow branches (the smallest SRN's 4 channels)
merged into wider convolutions (:mod:`.merged_rfe`): the same function, which onnxruntime
keeps in its blocked layout; both checks compare it with the model as trained.

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
import uuid
import warnings
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, pairwise_iou

from ..checkpoint import load_inference_weights
from ..errors import ExportError, require
from ..modeling import SRN
from ..utils.file_io import atomic_write, atomic_write_path, check_output_path
from .batched import BatchedSRN
from .merged_rfe import merge_narrow_rfe
from .onnx_runtime import (
    BATCHED_INTERFACE,
    EXPORT_ID,
    INPUT_FORMAT,
    INPUT_SIZE,
    MAX_SIZE_TEST,
    MIN_SIZE_TEST,
    PRECISION,
    SINGLE_INTERFACE,
    format_input_size,
    pad_images,
    split_by_image,
    with_landmarks,
)

__all__ = [
    "FORMATS",
    "ExportError",
    "batched_runner",
    "check_exportable",
    "deployment_metadata",
    "export",
    "on_cpu",
    "export_onnx",
    "export_torchscript",
    "exported_file",
    "exported_runner",
    "traceable",
    "verify",
    "verify_batched",
    "verify_network",
]

logger = logging.getLogger("srn_d2.export")

FORMATS = ("onnx", "torchscript")
# SRN, and the RetinaNet it is compared with (Detectron2 traces it too).
EXPORTABLE = ("SRN", "RetinaNet")
ONNX_OPSET = 17
BOX_TOLERANCE_PX, SCORE_TOLERANCE = 0.01, 1e-4


def exported_file(export_format: str, batched: bool = False) -> str:
    """The file name an export writes in its output folder."""
    return ("model_batched" if batched else "model") + (
        ".onnx" if export_format == "onnx" else ".ts"
    )


def check_exportable(cfg, batched: bool = False) -> None:
    """ValueError naming the key that keeps ``cfg`` from being exported."""
    require(
        cfg.MODEL.META_ARCHITECTURE in EXPORTABLE,
        "MODEL.META_ARCHITECTURE",
        cfg.MODEL.META_ARCHITECTURE,
        f"the export takes {EXPORTABLE} models",
    )
    if batched:
        require(
            cfg.MODEL.META_ARCHITECTURE == "SRN",
            "MODEL.META_ARCHITECTURE",
            cfg.MODEL.META_ARCHITECTURE,
            "the batched export (--batch) takes SRN models",
        )
        require(
            cfg.MODEL.SRN.NUM_CLASSES == 1,
            "MODEL.SRN.NUM_CLASSES",
            cfg.MODEL.SRN.NUM_CLASSES,
            "the batched export caps each image's detections in NMS order, the score order of one class",
        )
    require(
        not cfg.TEST.AUG.ENABLED,
        "TEST.AUG.ENABLED",
        True,
        "the multi-scale test resizes with OpenCV and votes box by box, outside any graph; "
        "export the single-scale model (TEST.AUG.ENABLED False) and run the passes around it",
    )
    require(
        cfg.INPUT.FORMAT in ("BGR", "RGB"),
        "INPUT.FORMAT",
        cfg.INPUT.FORMAT,
        "the export takes BGR or RGB input",
    )


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
        warnings.filterwarnings(
            "ignore", message="`torch.jit.script` is deprecated", category=FutureWarning
        )
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
        EXPORT_ID: uuid.uuid4().hex,
    }


def _graph(
    model, batched: bool
) -> Tuple[torch.nn.Module, Tuple[Tuple[str, int], ...], Tuple[str, ...]]:
    """The module to trace and its interface: (input name, rank) pairs and output names."""
    interface = BATCHED_INTERFACE if batched else SINGLE_INTERFACE
    if isinstance(model, SRN) and model.num_landmarks:
        interface = with_landmarks(interface)
    return (BatchedSRN(model) if batched else traceable(model)).eval(), *interface


def export_onnx(
    model,
    sample: Tuple[torch.Tensor, ...],
    path: str,
    metadata: Dict[str, str],
    batched: bool = False,
    any_size: bool = True,
    merge_rfe: bool = True,
) -> None:
    """Write ``path``: the traced model, dynamic in every image dimension, and ``metadata``.

    Args:
        sample: the inputs to trace with: ``(image,)``, or ``(images, image_sizes)`` if ``batched``.
        any_size: False for a one-image graph that takes only ``sample``'s size (recorded in
            the metadata), whose shape computations onnxruntime then folds away, which makes
            it faster.
        merge_rfe: trace RFE blocks with narrow branches merged (:mod:`.merged_rfe`: the same
            function, faster on onnxruntime); False traces them as the model has them, the
            baseline of ``benchmarks/benchmark_merged_rfe.py``.
    """
    import onnx

    module, inputs, outputs = _graph(merge_narrow_rfe(model) if merge_rfe else model, batched)
    dynamic = {
        **{name: {0: "batch"} for name, _ in inputs[1:]},
        **{name: {0: "detections"} for name in outputs},
    }
    if any_size:
        image_axes = {0: "batch", 2: "height", 3: "width"} if batched else {1: "height", 2: "width"}
        dynamic[inputs[0][0]] = image_axes
    else:
        metadata = {**metadata, INPUT_SIZE: format_input_size(tuple(sample[0].shape[-2:]))}
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


def export_torchscript(
    model,
    sample: Tuple[torch.Tensor, ...],
    path: str,
    metadata: Dict[str, str],
    batched: bool = False,
) -> None:
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


def batched_runner(
    path: str, export_format: str
) -> Callable[[List[np.ndarray]], List[Tuple[np.ndarray, ...]]]:
    """(3, H_i, W_i) float32 images -> each one's (boxes, scores, classes[, landmarks]), from one
    call of the batched export on the images padded together."""
    run = exported_runner(path, export_format)

    def run_batch(images):
        return _per_image(run(*pad_images(images)), len(images))

    return run_batch


def verify(model, run_exported, image: torch.Tensor) -> Dict[str, float]:
    """Compare the exported model with ``model`` on one image; ExportError on any difference.

    Detections are compared as sets (see :func:`_compare`).
    Returns the count and the largest box and score differences.
    """
    with torch.no_grad():
        expected = [t.cpu().numpy() for t in _detections(model, [{"image": image}])]
    return _compare(
        expected, run_exported(image.cpu().numpy()), tuple(image.shape[-2:]), _borders(model, image)
    )


def verify_batched(model, run_batch, images: Tuple[torch.Tensor, ...]) -> Dict[str, float]:
    """Compare the batched export with PyTorch on ``images`` padded into one batch, the first
    of them the largest: every image against :class:`BatchedSRN` in PyTorch, and the first,
    which no padding changes, against the one-image model. ExportError on any difference."""
    arrays = [image.cpu().numpy() for image in images]
    batch, sizes = pad_images(arrays)
    require(
        tuple(sizes[0]) == batch.shape[2:],
        "verify_batched",
        sizes.tolist(),
        "the first image must be the largest, the one left unpadded",
    )
    got = run_batch(arrays)
    with torch.no_grad():
        expected = _per_image(
            [
                t.cpu().numpy()
                for t in BatchedSRN(model).eval()(
                    torch.from_numpy(batch).to(model.device),
                    torch.from_numpy(sizes).to(model.device),
                )
            ],
            len(images),
        )
    report = {}
    for i, image in enumerate(images):
        report[f"image {i}"] = _compare(
            expected[i], got[i], tuple(image.shape[-2:]), _borders(model, image)
        )
    with torch.no_grad():
        alone = [t.cpu().numpy() for t in _detections(model, [{"image": images[0]}])]
    report["image 0 alone"] = _compare(
        alone, got[0], tuple(images[0].shape[-2:]), _borders(model, images[0])
    )
    return report


def _per_image(outputs, count: int) -> List[Tuple[np.ndarray, ...]]:
    """The batched graph's outputs -> each image's (boxes, scores, classes[, landmarks])."""
    return split_by_image((*outputs[:3], *outputs[4:]), outputs[3], count)


class _Borders(NamedTuple):
    """Where the post-processing may decide differently on numbers equal within tolerance."""

    score_thresh: float = -1.0  # candidates scoring about this may fall on either side
    nms_thresh: float = 1.0  # tied detections overlapping more than this: NMS keeps either
    max_detections: int = 0  # at the cap, the lowest scores may be cut on either side
    # (boxes, scores) of PyTorch's detections before NMS and the cap: a detection NMS kept
    # instead of a tied one must be one of them. None: not checked.
    candidates: Optional[Tuple[np.ndarray, np.ndarray]] = None


def _borders(model, image: torch.Tensor) -> _Borders:
    """The model's thresholds (SRN's and Detectron2's RetinaNet's attributes share names), and its
    candidates on ``image``: its detections with NMS and the cap turned off."""
    thresholds = (model.test_nms_thresh, model.max_detections_per_image)
    model.test_nms_thresh, model.max_detections_per_image = 1.0, 1 << 30
    try:
        with torch.no_grad():
            boxes, scores = (t.cpu().numpy() for t in _detections(model, [{"image": image}])[:2])
    finally:
        model.test_nms_thresh, model.max_detections_per_image = thresholds
    return _Borders(
        float(model.test_score_thresh), float(thresholds[0]), int(thresholds[1]), (boxes, scores)
    )


def _compare(expected, got, size, borders: _Borders = _Borders()) -> Dict[str, float]:
    """(boxes, scores, classes[, landmarks]) of one image, expected and exported: ExportError on
    any difference beyond tolerance.

    Detections are compared as sets: each exported detection is paired with an expected one of
    the same class whose box, score and landmarks are within tolerance. Numbers equal within
    tolerance may still be decided either way by the post-processing, so a detection left
    unpaired is accepted where that can happen: its score is within tolerance of the score
    threshold or, at the cap on detections, of the lowest kept score; or it is NMS's choice
    between tied detections (an unpaired detection of the other side overlaps it above the NMS
    threshold with a score within tolerance, and the exported one is among PyTorch's candidates
    before NMS). At most a quarter of the detections may be ties.
    """
    from scipy.optimize import linear_sum_assignment

    if len(got) != len(expected):
        raise ExportError(
            f"{size} px: the export gives {len(got)} outputs, PyTorch {len(expected)}"
        )
    num_expected, num_got = len(expected[0]), len(got[0])
    box_diff = score_diff = landmark_diff = 0.0
    rows = cols = np.zeros(0, dtype=np.int64)
    if num_expected and num_got:
        boxes = np.abs(expected[0][:, None] - got[0][None]).max(-1)
        scores = np.abs(expected[1][:, None] - got[1][None])
        within = (
            (boxes <= BOX_TOLERANCE_PX)
            & (scores <= SCORE_TOLERANCE)
            & (expected[2][:, None] == got[2][None])
        )
        if len(expected) > 3:
            points = (
                np.abs(expected[3][:, None] - got[3][None])
                .reshape(num_expected, num_got, -1)
                .max(-1)
            )
            within &= points <= BOX_TOLERANCE_PX
        rows, cols = linear_sum_assignment(np.where(within, boxes + scores, 1e9))
        paired = within[rows, cols]
        rows, cols = rows[paired], cols[paired]
    if len(rows):
        box_diff = float(np.abs(expected[0][rows] - got[0][cols]).max())
        score_diff = float(np.abs(expected[1][rows] - got[1][cols]).max())
        if len(expected) > 3:
            landmark_diff = float(np.abs(expected[3][rows] - got[3][cols]).max())
    lone_expected = np.setdiff1d(np.arange(num_expected), rows)
    lone_got = np.setdiff1d(np.arange(num_got), cols)
    overlaps = pairwise_iou(
        Boxes(torch.as_tensor(expected[0]).reshape(-1, 4)),
        Boxes(torch.as_tensor(got[0]).reshape(-1, 4)),
    ).numpy()
    ties = [0, 0]
    for s, (side, lone, other, other_lone, side_overlaps) in enumerate(
        (
            (expected, lone_expected, got, lone_got, overlaps),
            (got, lone_got, expected, lone_expected, overlaps.T),
        )
    ):
        at_cap = borders.max_detections and len(side[1]) >= borders.max_detections
        lowest = float(side[1].min()) if len(side[1]) else 0.0
        for index in lone:
            score = float(side[1][index])
            if abs(score - borders.score_thresh) <= SCORE_TOLERANCE or (
                at_cap and score - lowest <= SCORE_TOLERANCE
            ):
                continue
            tied = [
                j
                for j in other_lone
                if abs(float(other[1][j]) - score) <= SCORE_TOLERANCE
                and side_overlaps[index, j] > borders.nms_thresh
                and _is_candidate(got[0][j] if side is expected else side[0][index], score, borders)
            ]
            if not tied:
                raise ExportError(
                    f"{size} px: the export gives {num_got} detections, PyTorch {num_expected}; "
                    f"{'a PyTorch' if side is expected else 'an exported'} detection (score {score:.4f}, box "
                    f"{np.round(side[0][index], 2).tolist()}) has no counterpart within {BOX_TOLERANCE_PX} px and "
                    f"{SCORE_TOLERANCE:g} in score, and is neither at the score threshold, nor at the cap, "
                    "nor tied with a detection NMS could keep instead"
                )
            ties[s] += 1
    # A tie resolved the other way leaves one detection unpaired on each side.
    num_ties = max(ties)
    if num_ties > max(1, max(num_expected, num_got) // 4):
        raise ExportError(
            f"{size} px: {num_ties} detections differ from PyTorch's, each only tied with another: "
            "more than NMS's order can explain"
        )
    report = {"detections": num_expected, "box_diff_px": box_diff, "score_diff": score_diff}
    if len(lone_expected) or len(lone_got):
        report["decided_otherwise"] = int(len(lone_expected) + len(lone_got))
    if len(expected) > 3:
        report["landmark_diff_px"] = landmark_diff
    return report


def _is_candidate(box: np.ndarray, score: float, borders: _Borders) -> bool:
    """Whether an exported detection is one of PyTorch's candidates (within tolerance)."""
    if borders.candidates is None:
        return True
    boxes, scores = borders.candidates
    return bool(
        np.any(
            (np.abs(boxes - box).max(-1, initial=0.0) <= BOX_TOLERANCE_PX)
            & (np.abs(scores - score) <= SCORE_TOLERANCE)
        )
    )


def _sample_images(
    device, input_size: Optional[Tuple[int, int]] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two images of different, odd sizes: the export must not depend on the traced size; or
    two of ``input_size``, the only size a fixed-size export takes."""
    generator = torch.Generator().manual_seed(0)
    return tuple(
        torch.randint(0, 256, (3, h, w), generator=generator).float().to(device)
        for h, w in ((input_size, input_size) if input_size else ((241, 321), (193, 157)))
    )


def export(
    cfg,
    export_format: str,
    output_dir: str,
    allow_random_weights: bool = False,
    batched: bool = False,
    output_path: Optional[str] = None,
    input_size: Optional[Tuple[int, int]] = None,
) -> str:
    """Export ``cfg``'s model with its MODEL.WEIGHTS; returns the written file
    (``model.onnx`` / ``model.ts``, or ``model_batched.*`` if ``batched``, in ``output_dir``;
    or ``output_path`` when given). With ``input_size`` (height, width), a one-image ONNX graph
    that takes images of that size only (after the test-time resize), and is faster for it."""
    require(export_format in FORMATS, "--format", export_format, f"must be one of {FORMATS}")
    if input_size is not None:
        require(
            export_format == "onnx" and not batched,
            "--input-size",
            format_input_size(input_size),
            "fixes the size of a one-image ONNX export; leave out --batch and --format torchscript",
        )
    check_exportable(cfg, batched)
    model = build_model(on_cpu(cfg)).eval()
    load_inference_weights(model, cfg.MODEL.WEIGHTS, allow_random=allow_random_weights)
    metadata = deployment_metadata(cfg)
    path = check_output_path(
        output_path or os.path.join(output_dir, exported_file(export_format, batched))
    )
    samples = _sample_images(model.device, input_size)
    sample = (
        tuple(
            torch.from_numpy(x).to(model.device)
            for x in pad_images([s.cpu().numpy() for s in samples])
        )
        if batched
        else samples[:1]
    )
    with atomic_write_path(path) as temporary:
        with warnings.catch_warnings():
            # Detectron2's Boxes and NMS check shapes in Python while traced; the checks
            # below compare the export with PyTorch on two sizes instead.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            if export_format == "onnx":
                export_onnx(model, sample, temporary, metadata, batched, input_size is None)
            else:
                export_torchscript(model, sample, temporary, metadata, batched)
        if batched:
            logger.info(
                f"{[tuple(s.shape[-2:]) for s in samples]} px in one batch: "
                f"{verify_batched(model, batched_runner(temporary, export_format), samples)}"
            )
        else:
            run_exported = exported_runner(temporary, export_format)
            for image in samples:
                logger.info(f"{tuple(image.shape[-2:])} px: {verify(model, run_exported, image)}")
        logger.info(f"network outputs: {verify_network(model, export_format, samples)}")
    logger.info(f"wrote {path}")
    return path


def on_cpu(cfg):
    """``cfg`` with MODEL.DEVICE "cpu": the export traces and verifies on the CPU, whatever device
    the config trains on. The exported graph is meant for onnxruntime's CPU provider (and the
    TorchScript file loads on the CPU); traced on a GPU it would keep that device in its constants,
    and its reference would be computed with cuDNN's TF32 convolutions, not the fp32 arithmetic the
    exported graph is checked against."""
    if cfg.MODEL.DEVICE == "cpu":
        return cfg
    logger.info(f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r}: the export traces and verifies on the CPU")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    return cfg


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


def verify_network(
    model, export_format: str, samples: Tuple[torch.Tensor, ...]
) -> Dict[str, float]:
    """Export the network alone (no threshold, no NMS) and compare its outputs with PyTorch's on
    each sample: ExportError beyond 1e-3 relative to the largest value. Unlike the detections,
    these exist whatever the weights and the image, so this check always compares something.
    The ONNX network is traced as :func:`export_onnx` traces the model (narrow RFE blocks merged)
    and compared with the model's own."""
    network = _NetworkOutputs(model).eval()
    exported = (
        _NetworkOutputs(merge_narrow_rfe(model)).eval() if export_format == "onnx" else network
    )
    with (
        tempfile.TemporaryDirectory(prefix="srn_d2-verify-") as folder,
        torch.no_grad(),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        path = os.path.join(folder, "network")
        if export_format == "onnx":
            names = [f"output{i}" for i in range(len(network(samples[0])))]
            torch.onnx.export(
                exported,
                (samples[0],),
                path,
                opset_version=ONNX_OPSET,
                input_names=["image"],
                output_names=names,
                dynamic_axes={"image": {1: "height", 2: "width"}},
                dynamo=False,
            )
        else:
            torch.jit.save(torch.jit.trace(exported, (samples[0],), check_trace=False), path)
        run_exported = exported_runner(path, export_format)
        largest = 0.0
        for image in samples:
            expected = [t.cpu().numpy() for t in network(image)]
            got = run_exported(image.cpu().numpy())
            size = tuple(image.shape[-2:])
            if [e.shape for e in expected] != [g.shape for g in got]:
                raise ExportError(
                    f"{size} px: the exported network's output shapes differ from PyTorch's"
                )
            scale = max(1.0, max(float(np.abs(e).max(initial=0.0)) for e in expected))
            diff = max(float(np.abs(e - g).max(initial=0.0)) for e, g in zip(expected, got)) / scale
            if not diff <= 1e-3:
                raise ExportError(
                    f"{size} px: the exported network's outputs differ from PyTorch's by {diff:.2e} "
                    "(relative to the largest)"
                )
            largest = max(largest, diff)
    return {"outputs": len(expected), "relative_diff": largest}
