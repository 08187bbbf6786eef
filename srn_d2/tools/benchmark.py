"""Benchmark detectors side by side: parameters, FLOPs, latency, training step, peak memory.

    python -m srn_d2.tools.benchmark \
        --configs SRN_R_50_FPN_widerface.yaml RetinaNet_R_50_FPN_widerface.yaml \
            "SRN_R_50_FPN_widerface.yaml:MODEL.SRN.HEAD_ACTIVATION_CHECKPOINT=towers" \
        --sizes 640x480 1024 [--device cuda] [--amp] [--opts KEY VALUE ...]

Inference is timed end to end, as DefaultPredictor runs it: an OpenCV (BGR,
uint8) image in, detections out; ``--onnx`` also times each config exported
by ``srn_d2.tools.export`` and run by ``ONNXFaceDetector`` on onnxruntime.
Every config is built in this one process and measured on the same inputs;
timed runs go in turns (one run of each config, then the next round), so that
a machine whose speed drifts affects all configs alike. The table gives
absolute values and, in parentheses, ratios to the first config at the same
input size. Anchor matching alone: ``python -m srn_d2.tools.benchmark_matching``.
"""
from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import argparse
import gc
import logging
import os
import statistics
import tempfile
from typing import List, Tuple

import numpy as np
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.analysis import FlopCountAnalysis
from detectron2.utils.events import EventStorage

from .. import model_zoo
from ..engine import setup_cfg
from ..utils.measure import PeakMemory, format_table, median_time

logger = logging.getLogger(__name__)
MIB = float(1 << 20)


def random_faces(num: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``num`` face-like boxes (height = 1.25 width, 6 px .. size / 3) inside a size x size image."""
    side = 6 + torch.rand(num, generator=generator) ** 2 * (size / 3 - 6)
    x1 = torch.rand(num, generator=generator) * (size - side)
    y1 = torch.rand(num, generator=generator) * (size - 1.25 * side)
    return torch.stack([x1, y1, x1 + side, y1 + 1.25 * side], dim=1)


def _training_batch(size: int, batch: int, faces: int, device: str):
    generator = torch.Generator().manual_seed(0)
    inputs = []
    for _ in range(batch):
        instances = Instances((size, size))
        instances.gt_boxes = Boxes(random_faces(faces, size, generator))
        instances.gt_classes = torch.zeros(faces, dtype=torch.long)
        image = torch.randint(0, 256, (3, size, size), generator=generator).float()
        inputs.append({"image": image.to(device), "instances": instances.to(device)})
    return inputs


def resolve_config(entry: str) -> Tuple[str, str, List[str]]:
    """``"NAME_OR_PATH[:KEY=VALUE,...]"`` -> (label, config file, overrides)."""
    name, _, overrides = entry.partition(":")
    path = name if os.path.isfile(name) else model_zoo.get_config_file(name)
    opts = [part for pair in overrides.split(",") if pair for part in pair.split("=", 1)]
    label = os.path.basename(name) + (f" {overrides}" if overrides else "")
    return label, path, opts


def parse_size(text: str) -> Tuple[int, int]:
    """ "640" -> (640, 640); "640x480" (width x height) -> (480, 640), as (height, width)."""
    width, _, height = text.partition("x")
    return int(height or width), int(width)


class Candidate:
    """One config's model at one input size, with its inputs, optimizer and results row."""

    def __init__(self, entry: str, opts: List[str], size: Tuple[int, int], device: str, train_batch: int, faces: int):
        label, path, own_opts = resolve_config(entry)
        self.cfg = setup_cfg(path, [*opts, *own_opts, "MODEL.DEVICE", device, "MODEL.WEIGHTS", ""])
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
        self.batch = _training_batch(max(size), train_batch, faces, device) if train_batch else None
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9)

    def _as_input(self, bgr: np.ndarray) -> torch.Tensor:
        """As DefaultPredictor turns an OpenCV image into the model's input."""
        image = bgr[:, :, ::-1] if self.cfg.INPUT.FORMAT == "RGB" else bgr
        return torch.as_tensor(image.astype("float32").transpose(2, 0, 1)).to(self.device)

    def infer(self):
        """One image end to end: BGR array to tensor, normalization, network, decoding, NMS."""
        with torch.no_grad():
            self.model([{"image": self._as_input(self.bgr)}])

    def export_onnx(self, path: str) -> None:
        """Export the model to ``path``; :meth:`infer_onnx` then runs it end to end on onnxruntime.

        Not verified against PyTorch here (random weights put scores at the thresholds,
        where float32 rounding decides); srn_d2.tools.export verifies real exports.
        """
        from ..deploy.onnx_runtime import ONNXFaceDetector
        from .export import check_exportable, deployment_metadata, export_onnx

        check_exportable(self.cfg)
        self.model.eval()
        export_onnx(self.model, self.inputs[0]["image"], path, deployment_metadata(self.cfg))
        # No spinning: idle sessions' threads would take the cores from the one being timed.
        self.onnx = ONNXFaceDetector(path, num_threads=torch.get_num_threads(), spin_wait=False)

    def infer_onnx(self):
        self.onnx(self.bgr)

    def train_step(self, amp: bool):
        dtype = torch.bfloat16 if self.device == "cpu" else torch.float16
        with torch.autocast(torch.device(self.device).type, dtype=dtype, enabled=amp):
            losses = self.model(self.batch)
        self.optimizer.zero_grad()
        sum(losses.values()).backward()
        self.optimizer.step()


def _interleaved_median_ms(candidates, run, iters: int, warmup: int, device: str) -> List[float]:
    """Median ms of ``run(candidate)`` per candidate, timed in turns (A, B, A, B, ...), so
    that a machine that slows down or speeds up during the run moves every candidate alike."""
    for candidate in candidates:
        for _ in range(warmup):
            run(candidate)
    times = [[] for _ in candidates]
    for _ in range(iters):
        for index, candidate in enumerate(candidates):
            times[index].append(1000 * median_time(lambda: run(candidate), device, iters=1, warmup=0))
    return [statistics.median(t) for t in times]


def _peak_mib(run, device: str) -> float:
    gc.collect()
    with PeakMemory(device) as peak:
        run()
    return peak.peak_bytes / MIB


def benchmark(entries, opts, size, device, iters, warmup, train_batch, faces, amp, onnx=False) -> List[dict]:
    candidates = [Candidate(entry, opts, size, device, train_batch, faces) for entry in entries]
    for candidate in candidates:
        candidate.model.eval()
        with torch.no_grad():
            flops = FlopCountAnalysis(candidate.model, candidate.inputs)
            flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            candidate.row["GFLOPs"] = flops.total() / 1e9
    for candidate, ms in zip(candidates, _interleaved_median_ms(candidates, Candidate.infer, iters, warmup, device)):
        candidate.row["infer_ms"] = ms
    if onnx:
        with tempfile.TemporaryDirectory() as folder:
            for index, candidate in enumerate(candidates):
                candidate.export_onnx(os.path.join(folder, f"{index}.onnx"))
        for candidate, ms in zip(candidates, _interleaved_median_ms(candidates, Candidate.infer_onnx, iters, warmup, device)):
            candidate.row["onnx_ms"] = ms
    for candidate in candidates:
        candidate.row["infer_peak_MiB"] = _peak_mib(candidate.infer, device)
    if train_batch:
        with EventStorage():
            for candidate in candidates:
                candidate.model.train()
            step = lambda candidate: candidate.train_step(amp)  # noqa: E731
            for candidate, ms in zip(candidates, _interleaved_median_ms(candidates, step, iters, 1, device)):
                candidate.row["train_ms"] = ms
            for candidate in candidates:
                candidate.row["train_peak_MiB"] = _peak_mib(lambda: step(candidate), device)
    return [candidate.row for candidate in candidates]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["SRN_R_50_FPN_widerface.yaml", "RetinaNet_R_50_FPN_widerface.yaml"],
        help="config files or shipped config names, each optionally followed by :KEY=VALUE,... overrides",
    )
    parser.add_argument(
        "--sizes", nargs="+", type=parse_size, default=[(1024, 1024)], help="image sizes: S (square) or WxH"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=5, help="timed runs per config (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--train-batch", type=int, default=2, help="images per training step; 0 skips training")
    parser.add_argument("--faces", type=int, default=20, help="faces per training image")
    parser.add_argument("--amp", action="store_true", help="training steps under autocast (bfloat16 on the CPU, float16 on CUDA)")
    parser.add_argument(
        "--onnx", action="store_true", help="also export each config and time it end to end on onnxruntime (CPU)"
    )
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides for every config")
    args = parser.parse_args(argv)
    # As SRNTrainer does on the CPU, so that training steps are timed as they train.
    torch.set_flush_denormal(True)

    columns = ["config", "size", "params_M", "GFLOPs", "infer_ms", "infer_peak_MiB"] + (["onnx_ms"] if args.onnx else [])
    if args.train_batch > 0:
        columns += ["train_ms", "train_peak_MiB"]
    print(f"device: {args.device}, threads: {torch.get_num_threads()}, median of {args.iters} runs taken in turns"
          + (", training under autocast" if args.amp else ""))
    for size in args.sizes:
        rows = benchmark(
            args.configs, args.opts, size, args.device, args.iters, args.warmup, args.train_batch, args.faces, args.amp,
            args.onnx,
        )
        print(format_table(rows, columns, baseline=rows[0]))
        print()


if __name__ == "__main__":
    main()
