"""Benchmark detectors side by side: parameters, FLOPs, latency, training step, peak memory.

    python -m srn_d2.tools.benchmark \
        --config-files configs/SRN_R_50_FPN_widerface.yaml configs/RetinaNet_R_50_FPN_widerface.yaml \
        --sizes 640 1024 [--device cuda]

Every config is measured in this one process on the same inputs; the table
gives absolute values and, in parentheses, ratios to the first config at the
same input size. Anchor matching alone: ``python -m srn_d2.tools.benchmark_matching``.
"""
from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import argparse
import gc
import logging

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


def benchmark_model(config_file, opts, size, device, iters, warmup, train_batch, faces):
    cfg = setup_cfg(config_file, [*opts, "MODEL.DEVICE", device, "MODEL.WEIGHTS", ""])
    torch.manual_seed(0)
    model = build_model(cfg)
    row = {"config": config_file.split("/")[-1], "size": size}
    row["params_M"] = sum(p.numel() for p in model.parameters()) / 1e6
    image = torch.randint(0, 256, (3, size, size), generator=torch.Generator().manual_seed(1)).float()
    inputs = [{"image": image.to(device)}]

    model.eval()
    with torch.no_grad():
        flops = FlopCountAnalysis(model, inputs)
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        row["GFLOPs"] = flops.total() / 1e9
        row["infer_ms"] = 1000 * median_time(lambda: model(inputs), device, iters, warmup)
        gc.collect()
        with PeakMemory(device) as peak:
            model(inputs)
        row["infer_peak_MiB"] = peak.peak_bytes / MIB

    if train_batch > 0:
        model.train()
        batch = _training_batch(size, train_batch, faces, device)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

        def step():
            losses = model(batch)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()

        with EventStorage():
            row["train_ms"] = 1000 * median_time(step, device, iters, warmup=1)
            gc.collect()
            with PeakMemory(device) as peak:
                step()
        row["train_peak_MiB"] = peak.peak_bytes / MIB
    del model
    gc.collect()
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-files", nargs="+", default=[
        model_zoo.get_config_file("SRN_R_50_FPN_widerface.yaml"),
        model_zoo.get_config_file("RetinaNet_R_50_FPN_widerface.yaml"),
    ])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1024])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=5, help="timed runs (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--train-batch", type=int, default=2, help="images per training step; 0 skips training")
    parser.add_argument("--faces", type=int, default=20, help="faces per training image")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every config")
    args = parser.parse_args(argv)
    # As SRNTrainer does on the CPU, so that training steps are timed as they train.
    torch.set_flush_denormal(True)

    columns = ["config", "size", "params_M", "GFLOPs", "infer_ms", "infer_peak_MiB"]
    if args.train_batch > 0:
        columns += ["train_ms", "train_peak_MiB"]
    print(f"device: {args.device}, threads: {torch.get_num_threads()}, median of {args.iters} runs")
    for size in args.sizes:
        rows = [
            benchmark_model(cf, args.opts, size, args.device, args.iters, args.warmup, args.train_batch, args.faces)
            for cf in args.config_files
        ]
        print(format_table(rows, columns, baseline=rows[0]))
        print()


if __name__ == "__main__":
    main()
