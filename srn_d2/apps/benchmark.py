"""Detectors side by side: parameters, FLOPs, latency, training step, peak memory
(the library behind ``python -m srn_d2.tools.benchmark``).

Inference is timed end to end, as DefaultPredictor runs it: an OpenCV (BGR,
uint8) image in, detections out; optionally also each config exported by
``srn_d2.deploy.export`` and run by ``ONNXFaceDetector`` on onnxruntime.
Every config is built in one process and measured on the same inputs; timed
runs go in turns (one run of each config, then the next round), so that a
machine whose speed drifts affects all configs alike.
"""

import functools
import logging
import os
import tempfile
from typing import Callable, List, Tuple

import numpy as np
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, Keypoints
from detectron2.utils.analysis import FlopCountAnalysis
from detectron2.utils.events import EventStorage

from .. import model_zoo
from ..data.image_io import bgr_to_model_input
from ..engine.defaults import setup_cfg, split_overrides
from ..utils.measure import interleaved_median_ms, peak_mib

__all__ = [
    "Candidate",
    "benchmark",
    "parse_size",
    "random_faces",
    "resolve_config",
    "training_batch",
]

logger = logging.getLogger(__name__)


def random_faces(num: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``num`` face-like boxes (height = 1.25 width, 6 px .. size / 3) inside a size x size image."""
    side = 6 + torch.rand(num, generator=generator) ** 2 * (size / 3 - 6)
    x1 = torch.rand(num, generator=generator) * (size - side)
    y1 = torch.rand(num, generator=generator) * (size - 1.25 * side)
    return torch.stack([x1, y1, x1 + side, y1 + 1.25 * side], dim=1)


# Where a face's five landmarks sit in its box (eyes, nose, mouth corners), for landmark models' steps.
_LANDMARKS_IN_BOX = torch.tensor([[0.3, 0.4], [0.7, 0.4], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]])


def training_batch(size: int, batch: int, faces: int, device: str):
    """``batch`` random size x size images with ``faces`` face-like boxes (and landmarks) each, on ``device``."""
    generator = torch.Generator().manual_seed(0)
    inputs = []
    for _ in range(batch):
        instances = Instances((size, size))
        boxes = random_faces(faces, size, generator)
        instances.gt_boxes = Boxes(boxes)
        instances.gt_classes = torch.zeros(faces, dtype=torch.long)
        # Every face has landmarks, which only a landmark model reads.
        points = boxes[:, None, :2] + _LANDMARKS_IN_BOX * (boxes[:, None, 2:] - boxes[:, None, :2])
        visible = torch.full((faces, len(_LANDMARKS_IN_BOX), 1), 2.0)
        instances.gt_keypoints = Keypoints(torch.cat([points, visible], dim=-1))
        image = torch.randint(0, 256, (3, size, size), generator=generator).float()
        inputs.append({"image": image.to(device), "instances": instances.to(device)})
    return inputs


def resolve_config(entry: str) -> Tuple[str, str, List[str]]:
    """``"NAME_OR_PATH[:KEY=VALUE,...]"`` -> (label, config file, overrides)."""
    name, opts = split_overrides(entry, "--configs")
    path = name if os.path.isfile(name) else model_zoo.get_config_file(name)
    overrides = entry.partition(":")[2]
    label = os.path.basename(name) + (f" {overrides}" if overrides else "")
    return label, path, opts


def parse_size(text: str) -> Tuple[int, int]:
    """ "640" -> (640, 640); "640x480" (width x height) -> (480, 640), as (height, width)."""
    width, _, height = text.partition("x")
    return int(height or width), int(width)


class Candidate:
    """One config's model at one input size, with its inputs, optimizer and results row."""

    def __init__(
        self,
        entry: str,
        opts: List[str],
        size: Tuple[int, int],
        device: str,
        train_batch: int,
        faces: int,
    ):
        label, path, own_opts = resolve_config(entry)
        # Random weights, no download: what is measured does not depend on the weights.
        self.cfg = setup_cfg(
            path,
            [
                *opts,
                *own_opts,
                "MODEL.DEVICE",
                device,
                "MODEL.WEIGHTS",
                "",
                "MODEL.TIMM.PRETRAINED",
                "False",
            ],
        )
        torch.manual_seed(0)
        self.model = build_model(self.cfg)
        self.device = device
        height, width = size
        self.row = {
            "config": label,
            "size": f"{width}x{height}",
            "params_M": sum(p.numel() for p in self.model.parameters()) / 1e6,
        }
        self.bgr = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
        self.inputs = [{"image": self._as_input(self.bgr)}]
        self.batch = training_batch(max(size), train_batch, faces, device) if train_batch else None
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9)

    def _as_input(self, bgr: np.ndarray) -> torch.Tensor:
        return bgr_to_model_input(bgr, self.cfg.INPUT.FORMAT).to(self.device)

    def infer(self):
        """One image end to end: BGR array to tensor, normalization, network, decoding, NMS."""
        with torch.no_grad():
            self.model([{"image": self._as_input(self.bgr)}])

    def gflops(self) -> float:
        """The model's GFLOPs on the image, counted by fvcore (one multiply-add is one FLOP)."""
        self.model.eval()
        with torch.no_grad():
            flops = FlopCountAnalysis(self.model, self.inputs)
            flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings(
                "none"
            )
            return flops.total() / 1e9

    def export_onnx(self, path: str, any_size: bool = True, merge_rfe: bool = True) -> None:
        """Export the model to ``path``, for any image size or (``any_size`` False) for the
        candidate's only, as ``export --input-size``, with narrow RFE branches merged as the export
        writes them or (``merge_rfe`` False) not; :meth:`onnx_runner` then runs it end to end
        on onnxruntime.

        Not verified against PyTorch here (random weights put scores at the thresholds,
        where float32 rounding decides); srn_d2.tools.export verifies real exports.
        """
        from ..deploy.export import check_exportable, deployment_metadata, export_onnx

        check_exportable(self.cfg)
        self.model.eval()
        export_onnx(
            self.model,
            (self.inputs[0]["image"],),
            path,
            deployment_metadata(self.cfg),
            any_size=any_size,
            merge_rfe=merge_rfe,
        )
        self.onnx_path = path

    def onnx_runner(self, num_threads: int, spin_wait: bool = False) -> Callable[[], object]:
        """One run of the export on the image, BGR in, boxes out, on ``num_threads`` onnxruntime
        threads; by default without spinning, as idle sessions' threads would otherwise take the
        cores from the one being timed (see :class:`ONNXFaceDetector`)."""
        from ..deploy.onnx_runtime import ONNXFaceDetector

        detector = ONNXFaceDetector(self.onnx_path, num_threads=num_threads, spin_wait=spin_wait)
        return functools.partial(detector, self.bgr)

    def train_step(self, amp: bool):
        dtype = torch.bfloat16 if self.device == "cpu" else torch.float16
        with torch.autocast(torch.device(self.device).type, dtype=dtype, enabled=amp):
            losses = self.model(self.batch)
        self.optimizer.zero_grad()
        sum(losses.values()).backward()
        self.optimizer.step()


def benchmark(
    entries, opts, size, device, iters, warmup, train_batch, faces, amp, onnx=False
) -> List[dict]:
    """One results row per config entry (see :class:`Candidate`) at ``size``, measured in turns."""
    candidates = [Candidate(entry, opts, size, device, train_batch, faces) for entry in entries]
    for candidate in candidates:
        candidate.row["GFLOPs"] = candidate.gflops()
    for candidate, ms in zip(
        candidates, interleaved_median_ms([c.infer for c in candidates], iters, warmup, device)
    ):
        candidate.row["infer_ms"] = ms
    if onnx:
        with tempfile.TemporaryDirectory() as folder:
            for index, candidate in enumerate(candidates):
                candidate.export_onnx(os.path.join(folder, f"{index}.onnx"))
            runners = [candidate.onnx_runner(torch.get_num_threads()) for candidate in candidates]
            onnx_ms = interleaved_median_ms(runners, iters, warmup, device)
        for candidate, ms in zip(candidates, onnx_ms):
            candidate.row["onnx_ms"] = ms
    for candidate in candidates:
        candidate.row["infer_peak_MiB"] = peak_mib(candidate.infer, device)
    if train_batch:
        with EventStorage():
            for candidate in candidates:
                candidate.model.train()
            steps = [functools.partial(candidate.train_step, amp) for candidate in candidates]
            for candidate, ms in zip(candidates, interleaved_median_ms(steps, iters, 1, device)):
                candidate.row["train_ms"] = ms
            for candidate, step in zip(candidates, steps):
                candidate.row["train_peak_MiB"] = peak_mib(step, device)
    return [candidate.row for candidate in candidates]
